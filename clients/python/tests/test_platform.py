"""The rest of the API through the sync client: the fleet, usage, approvals, webhooks,
schedules, MCP and the operational routes."""

from __future__ import annotations

import time

import pytest

import mistersmith
from mistersmith import Client


def test_fleet(client: Client) -> None:
    agents = {a.name: a for a in client.list_agents()}
    assert {"echo", "sleep", "fail", "stream", "artifact"} <= set(agents)
    assert agents["sleep"].concurrency == 8 and agents["sleep"].executor == "sleep"
    assert agents["artifact"].executor == "process" and agents["artifact"].command == "sh"
    assert agents["echo"].breaker == "closed" and agents["echo"].queued >= 0

    nodes = client.list_nodes()
    assert {n.role for n in nodes if n.status == "alive"} == {"supervisor", "worker", "gateway"}

    deadline = time.monotonic() + 10
    while True:  # the leading supervisor's first heartbeat carries the first decision
        try:
            scaling = client.get_scaling()
            break
        except mistersmith.Unavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert scaling.workers >= 1 and scaling.max_agents >= scaling.min_agents

    assert client.list_providers() == []


def test_usage_totals(client: Client) -> None:
    client.run("echo", "counted", timeout=30)
    by_agent = client.usage()
    assert by_agent.by == "agent"
    by_tenant = client.usage(by="tenant")
    assert by_tenant.by == "tenant"
    # built-in agents spend nothing: only agents with usage are listed
    assert all(item.input_tokens + item.output_tokens > 0 or item.cost_usd > 0 for item in by_agent.items)


def test_approvals_without_requests(client: Client) -> None:
    task = client.run("echo", "needs nobody", timeout=30)
    assert client.list_task_approvals(task.id) == []
    page = client.list_approvals(status="pending", limit=10)
    assert page.items == [] and page.next_before is None
    assert client.list_approvals(task_id=task.id).items == []
    with pytest.raises(mistersmith.NotFound):
        client.answer_approval(task.id, "apr_missing", decision="allow")


def test_webhooks_and_a_failed_delivery_replayed(client: Client) -> None:
    # a port nothing listens on: every attempt is refused, and after retry_for it is failed
    hook = client.create_webhook("http://127.0.0.1:9/hook", ["task.failed"], description="python client test")
    assert hook.secret is not None and hook.secret.startswith("whsec_")
    assert hook.kinds == ["task.failed"] and hook.description == "python client test"
    assert client.get_webhook(hook.id).secret is None
    assert hook.id in {w.id for w in client.list_webhooks()}

    failed = client.run("fail", "for the webhook", max_attempts=1, timeout=30)
    deadline = time.monotonic() + 30
    while True:
        page = client.list_deliveries(hook.id, limit=10)
        mine = [d for d in page.items if d.task_id == failed.id]
        if mine and mine[0].state == "failed":
            break
        assert time.monotonic() < deadline, page
        time.sleep(0.2)
    delivery = mine[0]
    assert delivery.event_type == "task.failed" and delivery.attempts >= 1
    replayed = client.replay_delivery(hook.id, delivery.id)
    assert replayed.id == delivery.id and replayed.state == "pending"

    client.delete_webhook(hook.id)
    with pytest.raises(mistersmith.NotFound):
        client.get_webhook(hook.id)
    with pytest.raises(mistersmith.NotFound):
        client.delete_webhook(hook.id)


def test_schedules(client: Client) -> None:
    schedule = client.create_schedule(
        "echo",
        "0 9 * * 1",
        input={"report": "weekly"},
        name="weekly-report",
        timezone="Europe/Berlin",
        overlap="skip",
        catchup="10m",
        metadata={"owner": "tests"},
    )
    assert schedule.name == "weekly-report" and schedule.timezone == "Europe/Berlin"
    assert schedule.input == {"report": "weekly"} and not schedule.paused
    assert schedule.next_fire_at is not None and schedule.upcoming

    got = client.get_schedule(schedule.id, upcoming=3)
    assert got.upcoming is not None and len(got.upcoming) == 3
    assert got.upcoming == sorted(got.upcoming)
    assert all(t.weekday() == 0 for t in got.upcoming)
    assert schedule.id in {s.id for s in client.list_schedules()}

    paused = client.pause_schedule(schedule.id)
    assert paused.paused and paused.next_fire_at is None
    resumed = client.resume_schedule(schedule.id)
    assert not resumed.paused and resumed.next_fire_at is not None

    client.delete_schedule(schedule.id)
    with pytest.raises(mistersmith.NotFound):
        client.get_schedule(schedule.id)


def test_mcp(client: Client) -> None:
    listed = client.call_mcp({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert listed["id"] == 1
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert {"share_discovery", "spawn_task", "await_task"} <= names
    batch = client.call_mcp(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]
    )
    assert [r["id"] for r in batch] == ["a"]
    assert client.call_mcp({"jsonrpc": "2.0", "method": "notifications/initialized"}) is None


def test_operational_routes(client: Client) -> None:
    assert client.health().status == "ok"
    assert client.ready() is True
    assert "smith_" in client.metrics()
    document = client.openapi()
    assert document["info"]["title"] == "MisterSmith" and "/v1/tasks" in document["paths"]
