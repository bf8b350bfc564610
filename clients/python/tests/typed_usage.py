"""Type-checked by test_typing.py, never run: what a caller of each client sees."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any, assert_type

import mistersmith
from mistersmith import AsyncClient, Client, Event, Retention, Session, Task, TaskPage


def sync_caller(c: Client) -> None:
    task = c.submit("echo", {"x": 1}, priority=3, budget={"max_tokens": 10})
    assert_type(task, Task)
    assert_type(c.get_task(task.id), Task)
    assert_type(c.list_tasks(status="queued"), TaskPage)
    assert_type(c.follow(task.id), Iterator[Event])
    assert_type(c.events(kinds=["task.failed"]), Iterator[Event | Retention])
    assert_type(c.wait(task.id, timeout=5), Task)
    assert_type(c.get_session("s"), Session)
    assert_type(c.list_agents(), list[mistersmith.Agent])
    assert_type(c.ready(), bool)
    assert_type(c.delete_webhook("w"), None)
    assert_type(c.call_mcp({"jsonrpc": "2.0", "method": "ping", "id": 1}), Any)
    c.get_task(42)  # type: ignore[arg-type]


async def async_caller(c: AsyncClient) -> None:
    task = await c.submit("echo", None, delay="5s")
    assert_type(task, Task)
    assert_type(await c.cancel(task.id), Task)
    assert_type(c.follow(task.id), AsyncGenerator[Event, None])
    assert_type(await c.wait(task.id), Task)
    assert_type(await c.get_artifact(task.id, "a/b.txt"), bytes)
    assert_type(await c.openapi(), dict[str, Any])
    await c.start_session("echo", metadata=[1])  # type: ignore[arg-type]
