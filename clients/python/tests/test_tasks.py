"""Tasks through the sync client: submit, get, list, wait, cancel, artifacts."""

from __future__ import annotations

import datetime as dt

import pytest

import mistersmith
from mistersmith import Client, Task


def test_submit_get_wait(client: Client) -> None:
    task = client.submit("echo", {"hello": "world"}, priority=5, metadata={"suite": "python"})
    assert isinstance(task, Task)
    assert task.agent == "echo"
    assert task.input == {"hello": "world"}
    assert task.priority == 5
    assert task.metadata == {"suite": "python"}
    assert task.status in ("queued", "running", "succeeded")
    assert task.created_at.tzinfo is not None

    got = client.get_task(task.id)
    assert got.id == task.id and got.input == task.input

    done = client.wait(task.id, timeout=30)
    assert done.status == "succeeded" and done.terminal
    assert done.result == {"hello": "world"}
    assert done.attempt == 1
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert done.error is None
    assert done.usage.input_tokens == 0


def test_wait_returns_failed_and_finished_tasks(client: Client) -> None:
    failed = client.run("fail", "boom", max_attempts=1, timeout=30)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "agent_failed"
    assert "boom" in failed.error.message
    # a task already finished is returned at once
    assert client.wait(failed.id, timeout=5).status == "failed"


def test_wait_times_out(client: Client) -> None:
    task = client.submit("sleep", 5000)
    try:
        with pytest.raises(mistersmith.WaitTimeout):
            client.wait(task.id, timeout=0.5)
    finally:
        client.cancel(task.id)


def test_cancel(client: Client) -> None:
    task = client.submit("sleep", 60000)
    cancelled = client.cancel(task.id)
    assert cancelled.id == task.id
    assert cancelled.status == "cancelled" or cancelled.cancel_requested
    assert client.wait(task.id, timeout=30).status == "cancelled"
    # idempotent: a finished task is returned unchanged
    assert client.cancel(task.id).status == "cancelled"


def test_idempotency_key_returns_the_same_task(client: Client) -> None:
    first = client.submit("echo", 1, idempotency_key="python-client-idem")
    again = client.submit("echo", 2, idempotency_key="python-client-idem")
    assert again.id == first.id and again.input == 1


def test_list_filters_and_pages(client: Client) -> None:
    parent = client.run("echo", "parent", timeout=30)
    submitted = [client.submit("echo", i, parent_id=parent.id).id for i in range(5)]
    ids = set(submitted)
    for task_id in submitted:
        client.wait(task_id, timeout=30)

    page = client.list_tasks(parent_id=parent.id, limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None
    assert all(isinstance(t, mistersmith.TaskListItem) for t in page.items)
    assert [t.id for t in page.items] == [submitted[4], submitted[3]]
    assert not page.items[0].input_omitted

    every = list(client.iter_tasks(parent_id=parent.id, page_size=2))
    assert [t.id for t in every] == submitted[::-1]  # newest first
    assert all(t.parent_id == parent.id and t.status == "succeeded" for t in every)

    succeeded = client.list_tasks(status="succeeded", agent="echo", limit=1000)
    assert ids <= {t.id for t in succeeded.items}


def test_large_inputs_are_left_out_of_lists_unless_full(client: Client) -> None:
    big = "x" * 20000
    task = client.run("echo", big, timeout=30)
    item = next(t for t in client.iter_tasks(agent="echo") if t.id == task.id)
    assert item.input is None and item.input_omitted and (item.input_bytes or 0) > 20000
    full = client.list_tasks(agent="echo", full=True, limit=50)
    assert next(t for t in full.items if t.id == task.id).input == big
    assert client.get_task(task.id).input == big


def test_scheduled_task_and_delay(client: Client) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    task = client.submit("echo", "later", run_at=later, ttl="2h")
    assert task.status == "scheduled"
    assert task.run_at is not None and abs((task.run_at - later).total_seconds()) < 1
    assert task.expires_at is not None
    assert client.cancel(task.id).status == "cancelled"
    delayed = client.submit("echo", "soon", delay=dt.timedelta(milliseconds=200))
    assert delayed.status == "scheduled"
    assert client.wait(delayed.id, timeout=30).status == "succeeded"


def test_artifacts(client: Client) -> None:
    task = client.run("artifact", "made by a test", timeout=60)
    assert task.status == "succeeded", task.error
    artifacts = client.list_artifacts(task.id)
    assert [a.name for a in artifacts] == ["out/input.txt"]
    assert artifacts[0].size == len("made by a test")
    assert client.get_artifact(task.id, "out/input.txt") == b"made by a test"
    with pytest.raises(mistersmith.NotFound):
        client.get_artifact(task.id, "out/missing.txt")
    assert client.list_artifacts(client.run("echo", 1, timeout=30).id) == []


def test_patch_of_a_task_without_workspace_is_a_conflict(client: Client) -> None:
    task = client.run("echo", "no workspace", timeout=30)
    with pytest.raises(mistersmith.Conflict) as e:
        client.get_patch(task.id)
    assert e.value.status == 409 and e.value.code == "conflict"


def test_a_traceparent_travels_with_the_task(client: Client) -> None:
    sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    # this smith up exports no traces: the task keeps the caller's own context
    task = client.submit("echo", "traced", traceparent=sent)
    assert task.traceparent == sent
    assert client.wait(task.id, timeout=30).traceparent == sent
    # a malformed one is ignored, not refused
    assert client.submit("echo", "untraced", traceparent="not-a-traceparent").traceparent is None
    assert client.submit("echo", "plain").traceparent is None
