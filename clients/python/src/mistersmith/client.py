"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class Client(Operations):
    """A client of one MisterSmith gateway.

    Args:
        base_url: The gateway, e.g. ``http://127.0.0.1:8080``; default ``MISTERSMITH_URL``,
            else ``http://127.0.0.1:8080``.
        api_key: The bearer credential (an API key ``smk_…``, the platform token or a JWT);
            default ``MISTERSMITH_API_KEY``, else none (a loopback ``smith up`` needs none).
        timeout: Seconds for each request (and for connecting a stream).
        stream_timeout: Seconds a stream may stay silent before it is reconnected; the
            server sends a keep-alive at least every 15 s.
        reconnect_timeout: Seconds a stream keeps trying to resume while the server is
            unreachable (restarting, say) before :class:`~mistersmith.ConnectionLost`;
            ``None`` for ever.
        verify: TLS verification: ``True``, ``False``, a CA bundle path or an SSLContext.
        headers: Extra headers for every request.
        transport: An httpx transport to send through instead of the network (tests).

    Every operation of the API is a method (``submit``, ``get_task``, ``follow``…); errors
    are raised as :class:`~mistersmith.ApiError` subclasses carrying the API's code. Use it
    as a context manager, or call :meth:`close`.
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, default_headers = settings(base_url, api_key, headers)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.reconnect_timeout = reconnect_timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=default_headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # --- sending ---------------------------------------------------------------------

    def _bind(self, build: Callable[P, _ops.Call[T]]) -> Callable[P, T]:
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return self._send(build(*args, **kwargs))

        return call

    def _send(self, call: _ops.Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return finish(call, response)

    # --- streams and helpers ----------------------------------------------------------

    @_ops.operation_id("streamTaskEvents")
    def follow(self, task_id: str, *, after: int | None = None) -> Iterator[Event]:
        """The task's events, from the start (or after seq ``after``) until its terminal one.

        Replays what happened so far, then follows live. A dropped connection, a silent one
        or a restart of the gateway is resumed with ``Last-Event-ID``: every event arrives
        once, in order. A task that does not exist raises :class:`~mistersmith.NotFound`;
        a server that stays unreachable, :class:`~mistersmith.ConnectionLost`.
        """
        return self._follow(task_id, after, None)

    def _follow(self, task_id: str, after: int | None, deadline: float | None) -> Iterator[Event]:
        path = _ops.path_of("streamTaskEvents", {"id": task_id})
        for item in self._stream(path, [], Resume(after), deadline, f"events of task {task_id}"):
            if isinstance(item, Event):
                yield item
                if item.terminal:
                    return

    @_ops.operation_id("streamEvents")
    def events(
        self,
        *,
        agent: str | None = None,
        kinds: Sequence[EventKind | str] | None = None,
        after: int | None = None,
    ) -> Iterator[Event | Retention]:
        """Every event of the caller's tenant(s) as it is committed, for ever.

        Without ``after`` it starts from now; with a position (an event's ``pos``) it
        replays what followed it, then goes live. Filter by ``agent`` and event ``kinds``.
        Disconnects are resumed like :meth:`follow`. A resume point below the retention
        horizon yields a :class:`~mistersmith.Retention` notice first.
        """
        params = _ops.feed_params(agent, kinds)
        path = _ops.path_of("streamEvents", {})
        yield from self._stream(path, params, Resume(after), None, "the event feed")

    def _stream(
        self,
        path: str,
        params: list[tuple[str, str]],
        resume: Resume,
        deadline: float | None,
        what: str,
    ) -> Iterator[StreamItem]:
        backoff = Backoff(self.reconnect_timeout, deadline)
        while True:
            error: BaseException | None = None
            try:
                headers = {"accept": "text/event-stream", **resume.headers()}
                timeout = backoff.timeout_for(self.stream_timeout, self.timeout)
                with self._http.stream("GET", path, params=tuple(params), headers=headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        response.read()
                        raise error_from_response(response)
                    parser = SseParser()
                    for chunk in response.iter_bytes():
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
            time.sleep(backoff.delay(error, what))

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Waits for the task to finish and returns it (any terminal status).

        Follows its events (resuming across disconnects), so it returns as soon as the task
        ends. Raises :class:`~mistersmith.WaitTimeout` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.get_task(task_id)
        if task.terminal:
            return task
        for _ in self._follow(task_id, None, deadline):
            pass
        # the terminal event and the task's status are stored together
        while True:
            task = self.get_task(task_id)
            if task.terminal:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} is still {task.status}")
            time.sleep(0.05)

    def run(self, agent: str, input: Any = None, *, timeout: float | None = None, **options: Any) -> Task:
        """Submits a task (``options`` as :meth:`submit` takes them) and waits for it."""
        task = self.submit(agent, input, **options)
        return self.wait(task.id, timeout)

    def iter_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        agent: str | None = None,
        session_id: str | None = None,
        parent_id: str | None = None,
        page_size: int | None = None,
        full: bool | None = None,
    ) -> Iterator[TaskListItem]:
        """Every task matching the filters, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(
                status=status,
                agent=agent,
                session_id=session_id,
                parent_id=parent_id,
                limit=page_size,
                cursor=cursor,
                full=full,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

