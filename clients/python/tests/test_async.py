"""The asyncio client: the same operations as coroutines, streams as async generators."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest
from conftest import Smith

import mistersmith
from mistersmith import AsyncClient, Event


@pytest.mark.asyncio
async def test_submit_follow_wait(aclient: AsyncClient) -> None:
    task = await aclient.submit("stream", {"events": 4, "interval_ms": 20})
    assert isinstance(task, mistersmith.Task)
    events = [event async for event in aclient.follow(task.id)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].kind == "task.succeeded"
    assert sum(e.kind == "output" for e in events) == 4
    done = await aclient.wait(task.id, timeout=30)
    assert done.status == "succeeded" and done.result == {"events": 4, "bytes": 0}


@pytest.mark.asyncio
async def test_many_waits_at_once(aclient: AsyncClient) -> None:
    tasks = await asyncio.gather(*(aclient.submit("sleep", 200 + 50 * i) for i in range(6)))
    finished = await asyncio.gather(*(aclient.wait(t.id, timeout=30) for t in tasks))
    assert [t.status for t in finished] == ["succeeded"] * 6
    assert [t.result for t in finished] == [200 + 50 * i for i in range(6)]
    listed = [t.id async for t in aclient.iter_tasks(agent="sleep", page_size=2)]
    assert {t.id for t in tasks} <= set(listed)


@pytest.mark.asyncio
async def test_sessions(aclient: AsyncClient) -> None:
    session = await aclient.start_session("echo", "one")
    turn = await aclient.add_turn(session.id, "two")
    await aclient.wait(turn.id, timeout=30)
    shown = await aclient.get_session(session.id)
    assert [t.result for t in shown.turns] == ["one", "two"]


@pytest.mark.asyncio
async def test_errors(aclient: AsyncClient) -> None:
    with pytest.raises(mistersmith.NotFound) as e:
        await aclient.get_task("01890a5d-ac96-774b-bcce-b302099a8057")
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(mistersmith.Unprocessable):
        await aclient.submit("echo", 1, priority=42)
    with pytest.raises(mistersmith.NotFound):
        async for _ in aclient.follow("01890a5d-ac96-774b-bcce-b302099a8057"):
            pass
    with pytest.raises(mistersmith.WaitTimeout):
        task = await aclient.submit("sleep", 5000)
        try:
            await aclient.wait(task.id, timeout=0.3)
        finally:
            await aclient.cancel(task.id)


@pytest.mark.asyncio
async def test_feed_resumes_by_position(aclient: AsyncClient) -> None:
    marker = [e async for e in aclient.follow((await aclient.submit("echo", "marker")).id)]
    ids = [(await aclient.submit("echo", i)).id for i in range(2)]
    seen: list[Event] = []
    async with contextlib.aclosing(
        aclient.events(agent="echo", kinds=["task.succeeded"], after=marker[-1].pos)
    ) as feed:
        async for item in feed:
            assert isinstance(item, Event)
            if item.task_id in ids:
                seen.append(item)
            if len(seen) == 2:
                break
    assert sorted(e.task_id or "" for e in seen) == sorted(ids)


@pytest.mark.asyncio
async def test_follow_survives_a_server_restart(start_smith: object) -> None:
    server: Smith = start_smith(args=("--drain-timeout", "300ms"))  # type: ignore[operator]
    async with server.async_client(reconnect_timeout=60) as c:
        task = await c.submit("stream", {"events": 20, "interval_ms": 100})
        events: list[Event] = []
        restart: asyncio.Task[None] | None = None

        def bounce() -> None:
            server.stop(signal.SIGTERM)
            server.restart()

        async for event in c.follow(task.id):
            events.append(event)
            if restart is None and event.kind == "output":
                restart = asyncio.create_task(asyncio.to_thread(bounce))
        assert restart is not None
        await restart
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].kind == "task.succeeded"
        assert max(e.attempt for e in events) == 2
        assert (await c.wait(task.id, timeout=10)).status == "succeeded"
