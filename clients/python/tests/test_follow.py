"""Following events: a task's stream to its end, resuming by id, across a server restart,
and the all-events feed."""

from __future__ import annotations

import signal
import threading
import time

from conftest import Smith

import mistersmith
from mistersmith import Client, Event


def assert_whole_log(task_id: str, events: list[Event]) -> None:
    """seq 1..n without gap or duplicate, one terminal event, and it is the last."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.kind for e in events]
    assert all(e.task_id == task_id for e in events)
    assert [e.terminal for e in events].count(True) == 1
    assert events[-1].terminal


def test_follow_replays_then_follows_live(client: Client) -> None:
    task = client.submit("stream", {"events": 5, "interval_ms": 50})
    events = list(client.follow(task.id))
    assert_whole_log(task.id, events)
    kinds = [e.kind for e in events]
    assert kinds[0] == "task.queued" and kinds[1] == "task.started" and kinds[-1] == "task.succeeded"
    outputs = [e.data for e in events if e.kind == "output"]
    assert [o["i"] for o in outputs] == [0, 1, 2, 3, 4]
    assert all(e.agent == "stream" and e.pos > 0 for e in events)
    # a finished task's stream replays the same log and closes
    assert [(e.seq, e.kind, e.data) for e in client.follow(task.id)] == [(e.seq, e.kind, e.data) for e in events]
    # and resumes after a given seq
    assert [e.seq for e in client.follow(task.id, after=3)] == [e.seq for e in events[3:]]


def test_follow_resumes_after_a_cut(client: Client) -> None:
    task = client.submit("stream", {"events": 20, "interval_ms": 20})
    first: list[Event] = []
    for event in client.follow(task.id):
        first.append(event)
        if len(first) == 6:
            break  # closes the connection
    rest = list(client.follow(task.id, after=first[-1].seq))
    assert_whole_log(task.id, first + rest)


def test_follow_survives_a_server_restart(start_smith: object) -> None:
    """SIGTERM to ``smith up`` mid-stream, a pause, a start on the same data dir and port:
    the reader goes on as if nothing happened, and sees every event once, in order."""
    server: Smith = start_smith(args=("--drain-timeout", "500ms"))  # type: ignore[operator]
    with server.client(reconnect_timeout=60) as c:
        task = c.submit("stream", {"events": 40, "bytes": 10, "interval_ms": 100})
        enough = threading.Event()
        restarted = threading.Event()
        failure: list[BaseException] = []

        def restart() -> None:
            try:
                enough.wait(30)
                code = server.stop(signal.SIGTERM)
                assert code == 0, f"smith up exited with {code} after SIGTERM"
                time.sleep(1.0)  # the reader meets a refused connection meanwhile
                server.restart()
                restarted.set()
            except BaseException as e:  # reported by the main thread
                failure.append(e)

        thread = threading.Thread(target=restart)
        thread.start()
        events: list[Event] = []
        try:
            for event in c.follow(task.id):
                events.append(event)
                if sum(e.kind == "output" for e in events) == 8:
                    enough.set()
        finally:
            enough.set()
            thread.join(60)
        assert not failure, failure
        assert restarted.is_set(), "the reader finished before the restart"

        assert_whole_log(task.id, events)
        kinds = [e.kind for e in events]
        assert events[-1].kind == "task.succeeded", kinds
        # the draining worker handed the attempt back; the restarted one ran it again
        assert "task.retrying" in kinds, kinds
        assert max(e.attempt for e in events) == 2
        assert sum(e.kind == "output" and e.attempt == 2 for e in events) == 40
        # what the reader saw is exactly the stored log
        replay = list(c.follow(task.id))
        assert [(e.seq, e.kind, e.data, e.attempt) for e in replay] == [
            (e.seq, e.kind, e.data, e.attempt) for e in events
        ]
        assert c.wait(task.id, timeout=10).attempt == 2


def test_follow_gives_up_when_the_server_stays_away(start_smith: object) -> None:
    server: Smith = start_smith()  # type: ignore[operator]
    with server.client(reconnect_timeout=1.0, timeout=2.0) as c:
        task = c.submit("sleep", 60000)
        stream = c.follow(task.id)
        assert next(stream).kind == "task.queued"
        server.stop(signal.SIGKILL)
        started = time.monotonic()
        try:
            for _ in stream:
                pass
            raise AssertionError("the stream ended without its server")
        except mistersmith.ConnectionLost:
            pass
        assert time.monotonic() - started < 10


def test_follow_unknown_task_raises(client: Client) -> None:
    try:
        list(client.follow("01890a5d-ac96-774b-bcce-b302099a8057"))
        raise AssertionError("no error for an unknown task")
    except mistersmith.NotFound as e:
        assert e.code == "not_found" and e.status == 404


def test_events_feed_filters_and_resumes_by_position(client: Client) -> None:
    # a position to start from: the end of a task finished before the ones watched
    marker = list(client.follow(client.submit("echo", "marker").id))
    start = marker[-1].pos
    ids = [client.submit("echo", i).id for i in range(3)]
    feed = client.events(agent="echo", kinds=["task.succeeded"], after=start)
    seen: list[Event] = []
    for item in feed:
        assert isinstance(item, Event)
        assert item.kind == "task.succeeded" and item.agent == "echo"
        if item.task_id in ids:
            seen.append(item)
        if len(seen) == 3:
            break
    feed.close()
    assert sorted(e.task_id or "" for e in seen) == sorted(ids)
    positions = [e.pos for e in seen]
    assert positions == sorted(positions) and positions[0] > start

    # resuming from a position replays what followed it, in commit order
    resumed = client.events(agent="echo", kinds=["task.succeeded"], after=seen[0].pos)
    again = [next(resumed) for _ in range(2)]
    resumed.close()
    assert [e.pos for e in again if isinstance(e, Event)] == positions[1:]
