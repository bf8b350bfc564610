"""Errors: each API error raises its ApiError subclass with the API's status, code and
message; a refused request changes nothing; a client with no server raises TransportError."""

from __future__ import annotations

import socket

import pytest

import mistersmith
from mistersmith import Client

MISSING = "01890a5d-ac96-774b-bcce-b302099a8057"


def test_not_found_carries_the_code(client: Client) -> None:
    with pytest.raises(mistersmith.NotFound) as e:
        client.get_task(MISSING)
    err = e.value
    assert isinstance(err, mistersmith.ApiError) and isinstance(err, mistersmith.MisterSmithError)
    assert (err.status, err.code) == (404, "not_found")
    assert MISSING in err.message
    assert err.body == {"error": {"code": "not_found", "message": err.message}}
    for call in (client.cancel, client.list_artifacts, client.list_task_approvals, client.get_patch):
        with pytest.raises(mistersmith.NotFound):
            call(MISSING)


def test_malformed_id_is_invalid_argument(client: Client) -> None:
    with pytest.raises(mistersmith.BadRequest) as e:
        client.get_task("not-a-uuid")
    assert (e.value.status, e.value.code) == (400, "invalid_argument")
    with pytest.raises(mistersmith.InvalidArgument):
        client.list_tasks(cursor="not-a-cursor")


@pytest.mark.parametrize(
    ("agent", "options", "needle"),
    [
        ("no-such-agent", {}, "no-such-agent"),
        ("echo", {"priority": 10}, "priority"),
        ("echo", {"budget": {"max_tokens": 0}}, "max_tokens"),
        ("echo", {"budget": {"max_tokens": 5, "unknown": 1}}, "unknown"),
        ("echo", {"parent_id": MISSING}, MISSING),
        ("echo", {"delay": "10s", "run_at": "2030-01-01T00:00:00Z"}, "delay"),
    ],
)
def test_unprocessable_submission_changes_nothing(
    client: Client, agent: str, options: dict[str, object], needle: str
) -> None:
    before = [t.id for t in client.list_tasks(limit=5).items]
    with pytest.raises(mistersmith.Unprocessable) as e:
        client.submit(agent, "x", **options)  # type: ignore[arg-type]
    assert (e.value.status, e.value.code) == (422, "unprocessable")
    assert needle in e.value.message
    assert [t.id for t in client.list_tasks(limit=5).items] == before


def test_bad_schedule_is_unprocessable(client: Client) -> None:
    with pytest.raises(mistersmith.Unprocessable) as e:
        client.create_schedule("echo", "not a cron")
    assert "cron" in e.value.message


def test_no_server_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(mistersmith.TransportError):
            c.health()


def test_environment_supplies_url_and_key(smith: object, monkeypatch: pytest.MonkeyPatch) -> None:
    url = smith.url  # type: ignore[attr-defined]
    monkeypatch.setenv("MISTERSMITH_URL", url)
    monkeypatch.setenv("MISTERSMITH_API_KEY", "from-the-environment")
    with Client() as c:
        assert c.base_url == url
        assert c._http.headers["authorization"] == "Bearer from-the-environment"
        assert c.health().status == "ok"


def test_credentials(start_smith: object) -> None:
    """With a token: none or a wrong one is 401; a key's scopes are enforced (403); a revoked
    key is 401 at once."""
    server = start_smith(token="python-client-token")  # type: ignore[operator]
    with server.client(api_key="") as anonymous, server.client(api_key="wrong") as wrong:
        with pytest.raises(mistersmith.Unauthorized) as e:
            anonymous.list_tasks()
        assert (e.value.status, e.value.code) == (401, "unauthenticated")
        with pytest.raises(mistersmith.Unauthenticated):
            wrong.submit("echo", 1)
        # the probes need no credential
        assert anonymous.health().status == "ok" and anonymous.ready() is True

    with server.client() as admin:
        created = admin.create_key(["tasks:read"], tenant="acme", name="reader")
        assert created.secret.startswith(f"smk_{created.key.id}_")
        assert created.key.tenant == "acme" and created.key.scopes == ["tasks:read"]
        with server.client(api_key=created.secret) as reader:
            assert reader.list_tasks().items == []
            with pytest.raises(mistersmith.Forbidden) as f:
                reader.submit("echo", 1)
            assert (f.value.status, f.value.code) == (403, "permission_denied")
            with pytest.raises(mistersmith.PermissionDenied):
                reader.metrics()
            revoked = admin.revoke_key(created.key.id)
            assert revoked.revoked_at is not None
            with pytest.raises(mistersmith.Unauthenticated):
                reader.list_tasks()
        keys = admin.list_keys(tenant="acme")
        assert [(k.id, k.revoked_at is not None) for k in keys] == [(created.key.id, True)]
        with pytest.raises(mistersmith.NotFound):
            admin.revoke_key("nosuchkey")
        # the platform's own routes
        assert "smith_" in admin.metrics()
        audit = admin.list_audit(action="key.create")
        assert [r.target for r in audit.items] == [created.key.id]
        assert audit.items[0].actor == "token" and audit.items[0].status == 201
        revocations = admin.list_audit(action="key.revoke", limit=10)
        assert [r.target for r in revocations.items] == [created.key.id, "nosuchkey"]
        assert [r.status for r in revocations.items] == [200, 404]
        assert revocations.next_after is None or revocations.next_after >= revocations.items[-1].id
