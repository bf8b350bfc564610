"""The asyncio client: the same methods as :class:`~mistersmith.Client`, as coroutines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import httpx

from . import _ops
from ._base import Operations, finish, settings
from ._sse import SseParser
from ._stream import Backoff, Resume, StreamItem, retryable
from .errors import ApiError, TransportError, WaitTimeout, error_from_response
from .models import Event, EventKind, Retention, Task, TaskListItem, TaskStatus

P = ParamSpec("P")
T = TypeVar("T")


class AsyncClient(Operations):
    """An asyncio client of one MisterSmith gateway; arguments as :class:`~mistersmith.Client`.

    Every request-response method is a coroutine function; :meth:`follow` and
    :meth:`events` are async generators (close them early with ``contextlib.aclosing``).
    Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,
        reconnect_timeout: float | None = 300.0,
        verify: Any = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, default_headers = settings(base_url, api_key, headers)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.reconnect_timeout = reconnect_timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=default_headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.base_url!r})"

    # --- sending ---------------------------------------------------------------------

    def _bind(self, build: Callable[P, _ops.Call[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self._send(build(*args, **kwargs))

        return call

    async def _send(self, call: _ops.Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return finish(call, response)

    # --- streams and helpers ----------------------------------------------------------

    @_ops.operation_id("streamTaskEvents")
    def follow(self, task_id: str, *, after: int | None = None) -> AsyncGenerator[Event, None]:
        """The task's events until its terminal one, resumed across disconnects and
        restarts; see :meth:`mistersmith.Client.follow`."""
        return self._follow(task_id, after, None)

    async def _follow(
        self, task_id: str, after: int | None, deadline: float | None
    ) -> AsyncGenerator[Event, None]:
        path = _ops.path_of("streamTaskEvents", {"id": task_id})
        stream = self._stream(path, [], Resume(after), deadline, f"events of task {task_id}")
        try:
            async for item in stream:
                if isinstance(item, Event):
                    yield item
                    if item.terminal:
                        return
        finally:
            await stream.aclose()

    @_ops.operation_id("streamEvents")
    async def events(
        self,
        *,
        agent: str | None = None,
        kinds: Sequence[EventKind | str] | None = None,
        after: int | None = None,
    ) -> AsyncGenerator[Event | Retention, None]:
        """Every event as it is committed, for ever; see :meth:`mistersmith.Client.events`."""
        params = _ops.feed_params(agent, kinds)
        path = _ops.path_of("streamEvents", {})
        stream = self._stream(path, params, Resume(after), None, "the event feed")
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    async def _stream(
        self,
        path: str,
        params: list[tuple[str, str]],
        resume: Resume,
        deadline: float | None,
        what: str,
    ) -> AsyncGenerator[StreamItem, None]:
        backoff = Backoff(self.reconnect_timeout, deadline)
        while True:
            error: BaseException | None = None
            try:
                headers = {"accept": "text/event-stream", **resume.headers()}
                timeout = backoff.timeout_for(self.stream_timeout, self.timeout)
                async with self._http.stream(
                    "GET", path, params=tuple(params), headers=headers, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise error_from_response(response)
                    parser = SseParser()
                    async for chunk in response.aiter_bytes():
                        for frame in parser.feed(chunk):
                            item = resume.accept(frame)
                            if item is None:
                                continue
                            backoff.reset()
                            yield item
            except (httpx.TransportError, ApiError) as e:
                if not retryable(e):
                    raise
                error = e
            # the stream ended before its end (a restart, a cut, a silence): resume after a pause
            await asyncio.sleep(backoff.delay(error, what))

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Waits for the task to finish and returns it; see :meth:`mistersmith.Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task = await self.get_task(task_id)
        if task.terminal:
            return task
        events = self._follow(task_id, None, deadline)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()
        while True:
            task = await self.get_task(task_id)
            if task.terminal:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} is still {task.status}")
            await asyncio.sleep(0.05)

    async def run(self, agent: str, input: Any = None, *, timeout: float | None = None, **options: Any) -> Task:
        """Submits a task (``options`` as :meth:`submit` takes them) and waits for it."""
        task = await self.submit(agent, input, **options)
        return await self.wait(task.id, timeout)

    async def iter_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        agent: str | None = None,
        session_id: str | None = None,
        parent_id: str | None = None,
        page_size: int | None = None,
        full: bool | None = None,
    ) -> AsyncIterator[TaskListItem]:
        """Every task matching the filters, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_tasks(
                status=status,
                agent=agent,
                session_id=session_id,
                parent_id=parent_id,
                limit=page_size,
                cursor=cursor,
                full=full,
            )
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
