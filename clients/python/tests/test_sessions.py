"""Sessions: a conversation of turns, each a task carrying the session's id."""

from __future__ import annotations

import pytest

import mistersmith
from mistersmith import Client


def test_session_turns_in_order(client: Client) -> None:
    session = client.start_session("echo", "first turn", metadata={"topic": "tests"})
    assert isinstance(session, mistersmith.NewSession)
    assert session.agent == "echo" and session.metadata == {"topic": "tests"}
    assert len(session.turns) == 1
    first = session.turns[0]
    assert first.session_id == session.id and first.input == "first turn"

    second = client.add_turn(session.id, {"text": "second turn"})
    assert second.session_id == session.id and second.agent == "echo"
    assert client.wait(second.id, timeout=30).status == "succeeded"
    assert client.get_task(first.id).status == "succeeded"

    shown = client.get_session(session.id)
    assert isinstance(shown, mistersmith.Session)
    assert [t.id for t in shown.turns] == [first.id, second.id]
    assert [t.result for t in shown.turns] == ["first turn", {"text": "second turn"}]
    assert shown.usage.cost_usd == 0.0
    assert shown.created_at == session.created_at

    # a turn's tasks are listed by session
    listed = {t.id for t in client.iter_tasks(session_id=session.id)}
    assert listed == {first.id, second.id}

    # a repeated idempotency key is the same turn
    again = client.add_turn(session.id, "third", idempotency_key="turn-3")
    assert client.add_turn(session.id, "third, again", idempotency_key="turn-3").id == again.id
    client.wait(again.id, timeout=30)
    assert len(client.get_session(session.id).turns) == 3


def test_session_without_a_first_turn(client: Client) -> None:
    session = client.start_session("echo")
    assert session.turns == []
    assert client.get_session(session.id).turns == []
    turn = client.add_turn(session.id, "now")
    assert client.wait(turn.id, timeout=30).result == "now"


def test_session_errors(client: Client) -> None:
    with pytest.raises(mistersmith.NotFound) as e:
        client.get_session("no-such-session")
    assert e.value.code == "not_found"
    with pytest.raises(mistersmith.NotFound):
        client.add_turn("no-such-session", "hello")
    # an agent that does not exist, or a timeout without an input: 422, nothing created
    with pytest.raises(mistersmith.Unprocessable) as u:
        client.start_session("no-such-agent", "hello")
    assert u.value.code == "unprocessable" and u.value.status == 422
    with pytest.raises(mistersmith.ValidationError):
        client.start_session("echo", timeout_ms=1000)
