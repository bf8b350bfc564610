"""The API's operations as requests, shared by :class:`Client` and :class:`AsyncClient`.

:data:`ROUTES` names every operation of the OpenAPI document by its ``operationId`` with its
method and path. Each request-response operation is one builder here, decorated with
:func:`operation`: it checks and encodes its arguments into a :class:`Call` (path, query,
body, headers) and says how to decode the answer; the clients only send it. The streams
(``streamTaskEvents``, ``streamEvents``) need a loop of their own per client and are built
in ``_stream``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload
from urllib.parse import quote

import httpx

from ._decode import decode
from .errors import ProtocolError
from .models import (
    Agent,
    ApiKey,
    Approval,
    ApprovalPage,
    Artifact,
    AuditPage,
    CreatedKey,
    Delivery,
    DeliveryPage,
    Health,
    NewSession,
    Node,
    Patch,
    Provider,
    Scaling,
    Schedule,
    Session,
    Task,
    TaskPage,
    TaskStatus,
    UsageTotals,
    Webhook,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from .aio import AsyncClient
    from .client import Client

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M")

#: Every operation of the API: ``operationId`` → (method, path template).
ROUTES: dict[str, tuple[str, str]] = {
    "submitTask": ("POST", "/v1/tasks"),
    "listTasks": ("GET", "/v1/tasks"),
    "getTask": ("GET", "/v1/tasks/{id}"),
    "cancelTask": ("POST", "/v1/tasks/{id}/cancel"),
    "streamTaskEvents": ("GET", "/v1/tasks/{id}/events"),
    "getTaskPatch": ("GET", "/v1/tasks/{id}/patch"),
    "listTaskArtifacts": ("GET", "/v1/tasks/{id}/artifacts"),
    "getTaskArtifact": ("GET", "/v1/tasks/{id}/artifacts/{name}"),
    "listTaskApprovals": ("GET", "/v1/tasks/{id}/approvals"),
    "answerApproval": ("POST", "/v1/tasks/{id}/approvals/{aid}"),
    "listApprovals": ("GET", "/v1/approvals"),
    "streamEvents": ("GET", "/v1/events"),
    "startSession": ("POST", "/v1/sessions"),
    "getSession": ("GET", "/v1/sessions/{id}"),
    "addTurn": ("POST", "/v1/sessions/{id}/turns"),
    "listAgents": ("GET", "/v1/agents"),
    "listNodes": ("GET", "/v1/nodes"),
    "getScaling": ("GET", "/v1/scaling"),
    "listProviders": ("GET", "/v1/providers"),
    "usageTotals": ("GET", "/v1/usage"),
    "createKey": ("POST", "/v1/keys"),
    "listKeys": ("GET", "/v1/keys"),
    "revokeKey": ("POST", "/v1/keys/{id}/revoke"),
    "listAudit": ("GET", "/v1/audit"),
    "createWebhook": ("POST", "/v1/webhooks"),
    "listWebhooks": ("GET", "/v1/webhooks"),
    "getWebhook": ("GET", "/v1/webhooks/{id}"),
    "deleteWebhook": ("DELETE", "/v1/webhooks/{id}"),
    "listWebhookDeliveries": ("GET", "/v1/webhooks/{id}/deliveries"),
    "replayWebhookDelivery": ("POST", "/v1/webhooks/{id}/deliveries/{delivery}/replay"),
    "createSchedule": ("POST", "/v1/schedules"),
    "listSchedules": ("GET", "/v1/schedules"),
    "getSchedule": ("GET", "/v1/schedules/{id}"),
    "deleteSchedule": ("DELETE", "/v1/schedules/{id}"),
    "pauseSchedule": ("POST", "/v1/schedules/{id}/pause"),
    "resumeSchedule": ("POST", "/v1/schedules/{id}/resume"),
    "callMcp": ("POST", "/mcp"),
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "metrics": ("GET", "/metrics"),
    "openapi": ("GET", "/v1/openapi.json"),
}

#: Operations of the document the clients deliberately do not offer, with why. The coverage
#: test checks that each is still documented the way the reason says.
NOT_OFFERED: dict[str, str] = {
    "openMcpStream": "GET /mcp: the server offers no server-to-client MCP stream; it always answers 405",
}

_NO_BODY: Any = object()

JsonObject = dict[str, Any]
Duration = str | int | dt.timedelta
"""A duration for the API: ``"30s"``, ``"2h 30m"``, milliseconds, or a timedelta."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of an operation, and how its answer is decoded."""

    operation: str
    parse: Callable[[httpx.Response], T]
    path_params: Mapping[str, str] = field(default_factory=dict)
    params: Sequence[tuple[str, str]] = ()
    body: Any = _NO_BODY
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Error statuses that are answers of this operation, handed to ``parse`` (``/readyz``'s 503).
    accept: frozenset[int] = frozenset()

    @property
    def method(self) -> str:
        return ROUTES[self.operation][0]

    @property
    def path(self) -> str:
        """The path, its parameters filled in and percent-encoded."""
        return path_of(self.operation, self.path_params)

    def request_kwargs(self) -> dict[str, Any]:
        """Arguments for ``httpx.Client.request`` besides method and path (relative to the base URL)."""
        kwargs: dict[str, Any] = {"params": list(self.params), "headers": dict(self.headers)}
        if self.body is not _NO_BODY:
            kwargs["content"] = json.dumps(self.body, separators=(",", ":")).encode()
            kwargs["headers"]["content-type"] = "application/json"
        return kwargs


def path_of(operation: str, params: Mapping[str, str]) -> str:
    """The operation's path with ``params`` percent-encoded into it (an artifact name keeps its ``/``)."""
    template = ROUTES[operation][1]
    values = {k: quote(v, safe="/" if k == "name" else "") for k, v in params.items()}
    return template.format(**values)


class Operation(Generic[P, T]):
    """A request-response operation: a builder of :class:`Call`, bound to a client on access.

    On a :class:`Client` the attribute is a function returning the decoded answer; on an
    :class:`AsyncClient` a coroutine function. ``operation_id`` names it in the API document.
    """

    def __init__(self, operation_id: str, build: Callable[P, Call[T]]) -> None:
        if operation_id not in ROUTES:
            raise ValueError(f"unknown operation {operation_id}")
        self.operation_id = operation_id
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Operation[P, T]: ...

    @overload
    def __get__(self, obj: AsyncClient, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __get__(self, obj: Client, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        bound = obj._bind(self.build)
        functools.update_wrapper(bound, self.build)
        bound.__operation_id__ = self.operation_id
        return bound


def operation(operation_id: str) -> Callable[[Callable[P, Call[T]]], Operation[P, T]]:
    """Makes a builder the client method of ``operation_id``."""

    def wrap(build: Callable[P, Call[T]]) -> Operation[P, T]:
        return Operation(operation_id, build)

    return wrap


def operation_id(name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Marks a hand-written client method (a stream, say) as the one of operation ``name``."""
    if name not in ROUTES:
        raise ValueError(f"unknown operation {name}")

    def mark(f: Callable[P, T]) -> Callable[P, T]:
        f.__operation_id__ = name  # type: ignore[attr-defined]
        return f

    return mark


def operations(cls: type) -> dict[str, str]:
    """The operations a client class offers: ``operationId`` → attribute name."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            op = value.operation_id if isinstance(value, Operation) else getattr(value, "__operation_id__", None)
            if isinstance(op, str):
                found[op] = name
    return found


# --- encoding ---------------------------------------------------------------------------


def _time(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"a naive datetime is ambiguous: {value!r}; give it a tzinfo")
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _duration(value: Duration) -> str | int:
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds() * 1000)
    return value


def _query(**values: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        elif isinstance(value, dt.datetime):
            out.append((key, _time(value)))
        elif isinstance(value, (list, tuple, set, frozenset)):
            out.append((key, ",".join(str(v) for v in value)))
        else:
            out.append((key, str(value)))
    return out


def _body(**fields: Any) -> JsonObject:
    """A JSON object of the fields given: ``None`` means absent (the API's default)."""
    return {k: v for k, v in fields.items() if v is not None}


# --- decoding ---------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as e:
        raise ProtocolError(f"{response.request.method} {response.request.url.path}: not JSON: {e}") from None


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return decode(cls, _json(response))

    return parse


def _items(cls: type[M], key: str = "items") -> Callable[[httpx.Response], list[M]]:
    def parse(response: httpx.Response) -> list[M]:
        body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get(key), list):
            raise ProtocolError(f"{response.request.url.path}: expected an object with {key!r}")
        return [decode(cls, item) for item in body[key]]

    return parse


def _nothing(response: httpx.Response) -> None:
    return None


def _text(response: httpx.Response) -> str:
    return response.text


def feed_params(agent: str | None, kinds: Sequence[str] | None) -> list[tuple[str, str]]:
    """The query of ``streamEvents``: an agent, and event kinds comma-separated."""
    return _query(agent=agent, kind=None if kinds is None else list(kinds))


# --- tasks ------------------------------------------------------------------------------


def _trace(traceparent: str | None) -> dict[str, str]:
    """The ``traceparent`` header, when one is given."""
    return {} if traceparent is None else {"traceparent": traceparent}


@operation("submitTask")
def submit(
    agent: str,
    input: Any = None,
    *,
    priority: int | None = None,
    timeout_ms: int | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    session_id: str | None = None,
    parent_id: str | None = None,
    budget: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    workspace_base: str | None = None,
    output_schema: Mapping[str, Any] | None = None,
    webhook: Mapping[str, Any] | None = None,
    run_at: dt.datetime | str | None = None,
    delay: Duration | None = None,
    ttl: Duration | None = None,
    concurrency_key: str | None = None,
    traceparent: str | None = None,
) -> Call[Task]:
    """Submit a task for ``agent`` with ``input`` (any JSON value) and return it, queued.

    ``traceparent`` (a W3C trace context) makes the task's spans and its agent's join the
    caller's trace (docs/telemetry.md); a malformed one is ignored by the server.

    A repeated ``idempotency_key`` returns the task it named instead of creating one.
    ``budget`` is ``{"max_tokens": N, "max_cost_usd": X}``; ``webhook`` is ``{"url": …,
    "secret": …}``; ``run_at`` or ``delay`` start it later, ``ttl`` expires it unstarted.
    Invalid values raise :class:`~mistersmith.Unprocessable` and create nothing.
    """
    body = _body(
        priority=priority,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        session_id=session_id,
        parent_id=parent_id,
        budget=budget,
        metadata=metadata,
        workspace=None if workspace_base is None else {"base": workspace_base},
        output_schema=output_schema,
        webhook=webhook,
        run_at=None if run_at is None else _time(run_at),
        delay=None if delay is None else _duration(delay),
        ttl=None if ttl is None else _duration(ttl),
        concurrency_key=concurrency_key,
    )
    return Call("submitTask", _model(Task), body={"agent": agent, "input": input, **body}, headers=_trace(traceparent))


@operation("listTasks")
def list_tasks(
    *,
    status: TaskStatus | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    parent_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    full: bool | None = None,
) -> Call[TaskPage]:
    """One page of tasks, newest first, filtered; ``next_cursor`` leads to the next page.

    Inputs and results over 16 KiB are left out of the items unless ``full=True``. See
    :meth:`Client.iter_tasks` for every page.
    """
    params = _query(
        status=status,
        agent=agent,
        session_id=session_id,
        parent_id=parent_id,
        limit=limit,
        cursor=cursor,
        full=full,
    )
    return Call("listTasks", _model(TaskPage), params=params)


@operation("getTask")
def get_task(task_id: str) -> Call[Task]:
    """The task, whole."""
    return Call("getTask", _model(Task), {"id": task_id})


@operation("cancelTask")
def cancel(task_id: str) -> Call[Task]:
    """Cancel the task (and its unfinished sub-tasks); idempotent. Returns it as it is now."""
    return Call("cancelTask", _model(Task), {"id": task_id})


def _patch(response: httpx.Response) -> Patch:
    h = response.headers
    return Patch(
        patch=response.text,
        branch=h.get("x-smith-branch"),
        from_commit=h.get("x-smith-from"),
        to_commit=h.get("x-smith-to"),
    )


@operation("getTaskPatch")
def get_patch(task_id: str) -> Call[Patch]:
    """What the task changed in its git workspace; :class:`~mistersmith.Conflict` if nothing recorded."""
    return Call("getTaskPatch", _patch, {"id": task_id})


@operation("listTaskArtifacts")
def list_artifacts(task_id: str) -> Call[list[Artifact]]:
    """The files the task's agent left in ``$SMITH_ARTIFACTS``, by name."""
    return Call("listTaskArtifacts", _items(Artifact, "artifacts"), {"id": task_id})


def _bytes(response: httpx.Response) -> bytes:
    return response.content


@operation("getTaskArtifact")
def get_artifact(task_id: str, name: str) -> Call[bytes]:
    """One artifact's bytes (``name`` as listed, ``/`` between its path's components)."""
    return Call("getTaskArtifact", _bytes, {"id": task_id, "name": name})


# --- approvals --------------------------------------------------------------------------


@operation("listApprovals")
def list_approvals(
    *,
    status: Literal["pending", "allowed", "denied", "answered", "cancelled"] | None = None,
    task_id: str | None = None,
    limit: int | None = None,
    before: str | None = None,
) -> Call[ApprovalPage]:
    """Requests agents made of people, newest first (``status="pending"``: those waiting)."""
    params = _query(status=status, task_id=task_id, limit=limit, before=before)
    return Call("listApprovals", _model(ApprovalPage), params=params)


@operation("listTaskApprovals")
def list_task_approvals(task_id: str) -> Call[list[Approval]]:
    """The task's requests of people, newest first."""
    return Call("listTaskApprovals", _items(Approval), {"id": task_id})


@operation("answerApproval")
def answer_approval(
    task_id: str,
    approval_id: str,
    *,
    decision: Literal["allow", "deny"] | None = None,
    message: str | None = None,
    input: Mapping[str, Any] | None = None,
    answer: str | None = None,
) -> Call[Approval]:
    """Answer a pending request once: ``decision`` for an approval (``input`` edits the
    call's arguments), ``answer`` for a question. Its task is queued again."""
    body = _body(decision=decision, message=message, input=input, answer=answer)
    return Call("answerApproval", _model(Approval), {"id": task_id, "aid": approval_id}, body=body)


# --- sessions ---------------------------------------------------------------------------


@operation("startSession")
def start_session(
    agent: str,
    input: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    timeout_ms: int | None = None,
    budget: Mapping[str, Any] | None = None,
    output_schema: Mapping[str, Any] | None = None,
    webhook: Mapping[str, Any] | None = None,
    traceparent: str | None = None,
) -> Call[NewSession]:
    """Start a session with ``agent``; with an ``input`` (not ``None``) its first turn is queued.

    ``timeout_ms``, ``budget``, ``output_schema`` and ``webhook`` apply to that first turn.
    """
    body = _body(
        agent=agent,
        input=input,
        metadata=metadata,
        timeout_ms=timeout_ms,
        budget=budget,
        output_schema=output_schema,
        webhook=webhook,
    )
    return Call("startSession", _model(NewSession), body=body, headers=_trace(traceparent))


@operation("getSession")
def get_session(session_id: str) -> Call[Session]:
    """The session, its turns oldest first (at most 1000) and their usage summed."""
    return Call("getSession", _model(Session), {"id": session_id})


@operation("addTurn")
def add_turn(
    session_id: str,
    input: Any,
    *,
    timeout_ms: int | None = None,
    budget: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    output_schema: Mapping[str, Any] | None = None,
    webhook: Mapping[str, Any] | None = None,
    traceparent: str | None = None,
) -> Call[Task]:
    """Queue the session's next turn with ``input``; returns the turn's task.

    Turns run one at a time, in order, each seeing the finished ones.
    """
    body = _body(
        timeout_ms=timeout_ms,
        budget=budget,
        idempotency_key=idempotency_key,
        metadata=metadata,
        output_schema=output_schema,
        webhook=webhook,
    )
    return Call(
        "addTurn", _model(Task), {"id": session_id}, body={"input": input, **body}, headers=_trace(traceparent)
    )


# --- fleet ------------------------------------------------------------------------------


@operation("listAgents")
def list_agents() -> Call[list[Agent]]:
    """Every agent definition with its queued and running counts, usage and breaker state."""
    return Call("listAgents", _items(Agent))


@operation("listNodes")
def list_nodes() -> Call[list[Node]]:
    """Every registered supervisor, worker and gateway, with its health."""
    return Call("listNodes", _items(Node))


@operation("getScaling")
def get_scaling() -> Call[Scaling]:
    """The autoscaler's latest decision: desired against current agent slots."""
    return Call("getScaling", _model(Scaling))


@operation("listProviders")
def list_providers() -> Call[list[Provider]]:
    """Provider accounts' fleet-wide rate limits and bucket levels (platform credential only)."""
    return Call("listProviders", _items(Provider))


@operation("usageTotals")
def usage(by: Literal["agent", "tenant"] | None = None) -> Call[UsageTotals]:
    """Token and cost totals so far, by agent (the default) or by tenant."""
    return Call("usageTotals", _model(UsageTotals), params=_query(by=by))


# --- access -----------------------------------------------------------------------------


@operation("createKey")
def create_key(
    scopes: Sequence[Literal["tasks:write", "tasks:read", "admin"]],
    *,
    tenant: str | None = None,
    name: str | None = None,
) -> Call[CreatedKey]:
    """Create an API key (admin scope); its ``secret`` is in this answer only."""
    body = _body(tenant=tenant, name=name)
    return Call("createKey", _model(CreatedKey), body={"scopes": list(scopes), **body})


@operation("listKeys")
def list_keys(tenant: str | None = None) -> Call[list[ApiKey]]:
    """API keys, oldest first, never their secrets (admin scope)."""
    return Call("listKeys", _items(ApiKey), params=_query(tenant=tenant))


@operation("revokeKey")
def revoke_key(key_id: str) -> Call[ApiKey]:
    """Revoke a key at once (admin scope); revoking again keeps the first time."""
    return Call("revokeKey", _model(ApiKey), {"id": key_id})


@operation("listAudit")
def list_audit(
    *,
    tenant: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> Call[AuditPage]:
    """A page of the audit log, oldest first (admin scope); ``next_after`` leads on."""
    params = _query(
        tenant=tenant,
        actor=actor,
        action=action,
        since=None if since is None else _time(since),
        until=None if until is None else _time(until),
        after=after,
        limit=limit,
    )
    return Call("listAudit", _model(AuditPage), params=params)


# --- webhooks ---------------------------------------------------------------------------


@operation("createWebhook")
def create_webhook(
    url: str,
    kinds: Sequence[str],
    *,
    secret: str | None = None,
    description: str | None = None,
) -> Call[Webhook]:
    """Subscribe ``url`` to event ``kinds`` (``task.succeeded``, ``task.*``, ``*``).

    Without a ``secret`` one is generated and returned once, in the answer's ``secret``.
    """
    body = _body(secret=secret, description=description)
    return Call("createWebhook", _model(Webhook), body={"url": url, "kinds": list(kinds), **body})


@operation("listWebhooks")
def list_webhooks() -> Call[list[Webhook]]:
    """The tenant's subscriptions, oldest first; never their secrets."""
    return Call("listWebhooks", _items(Webhook))


@operation("getWebhook")
def get_webhook(webhook_id: str) -> Call[Webhook]:
    """One subscription (never its secret)."""
    return Call("getWebhook", _model(Webhook), {"id": webhook_id})


@operation("deleteWebhook")
def delete_webhook(webhook_id: str) -> Call[None]:
    """Delete a subscription and its pending deliveries."""
    return Call("deleteWebhook", _nothing, {"id": webhook_id})


@operation("listWebhookDeliveries")
def list_deliveries(webhook_id: str, *, limit: int | None = None, cursor: str | None = None) -> Call[DeliveryPage]:
    """A subscription's delivery log, newest first; ``next_cursor`` leads on."""
    params = _query(limit=limit, cursor=cursor)
    return Call("listWebhookDeliveries", _model(DeliveryPage), {"id": webhook_id}, params=params)


@operation("replayWebhookDelivery")
def replay_delivery(webhook_id: str, delivery_id: str) -> Call[Delivery]:
    """Send a failed delivery again (same ``webhook-id`` and body); :class:`~mistersmith.Conflict` otherwise."""
    return Call("replayWebhookDelivery", _model(Delivery), {"id": webhook_id, "delivery": delivery_id})


# --- schedules --------------------------------------------------------------------------


@operation("createSchedule")
def create_schedule(
    agent: str,
    cron: str,
    *,
    input: Any = None,
    name: str | None = None,
    timezone: str | None = None,
    overlap: Literal["skip", "enqueue", "cancel_previous"] | None = None,
    catchup: Duration | None = None,
    paused: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    priority: int | None = None,
    timeout_ms: int | None = None,
    max_attempts: int | None = None,
) -> Call[Schedule]:
    """Fire a task of ``agent`` with ``input`` on the ``cron`` timetable (in ``timezone``).

    A bad ``cron``, ``timezone``, ``agent``, ``overlap`` or ``catchup`` raises
    :class:`~mistersmith.InvalidArgument` naming the field.
    """
    body = _body(
        agent=agent,
        cron=cron,
        input=input,
        name=name,
        timezone=timezone,
        overlap=overlap,
        catchup=None if catchup is None else _duration(catchup),
        paused=paused,
        metadata=metadata,
        priority=priority,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
    )
    return Call("createSchedule", _model(Schedule), body=body)


@operation("listSchedules")
def list_schedules() -> Call[list[Schedule]]:
    """The tenant's schedules, oldest first."""
    return Call("listSchedules", _items(Schedule))


@operation("getSchedule")
def get_schedule(schedule_id: str, *, upcoming: int | None = None) -> Call[Schedule]:
    """A schedule with its next ``upcoming`` fire times (default 5)."""
    return Call("getSchedule", _model(Schedule), {"id": schedule_id}, params=_query(upcoming=upcoming))


@operation("deleteSchedule")
def delete_schedule(schedule_id: str) -> Call[None]:
    """Delete a schedule; the tasks it fired stay."""
    return Call("deleteSchedule", _nothing, {"id": schedule_id})


@operation("pauseSchedule")
def pause_schedule(schedule_id: str) -> Call[Schedule]:
    """Pause a schedule: nothing fires until it is resumed."""
    return Call("pauseSchedule", _model(Schedule), {"id": schedule_id})


@operation("resumeSchedule")
def resume_schedule(schedule_id: str) -> Call[Schedule]:
    """Resume a schedule at its first fire time after now (missed fires are not run)."""
    return Call("resumeSchedule", _model(Schedule), {"id": schedule_id})


# --- MCP and operations -----------------------------------------------------------------


def _mcp(response: httpx.Response) -> Any:
    if response.status_code == 202 or not response.content:
        return None
    return _json(response)


@operation("callMcp")
def call_mcp(message: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, task_id: str | None = None) -> Call[Any]:
    """Send one JSON-RPC 2.0 message (or a batch) to the platform's MCP server.

    Returns the response (a list for a batch), or ``None`` when only notifications were sent.
    ``task_id`` acts as that task (``x-smith-task``); without it, as an operator.
    """
    body: Any = dict(message) if isinstance(message, Mapping) else [dict(m) for m in message]
    headers = {} if task_id is None else {"x-smith-task": task_id}
    return Call("callMcp", _mcp, body=body, headers=headers)


@operation("healthz")
def health() -> Call[Health]:
    """Liveness: the process is up."""
    return Call("healthz", _model(Health))


def _ready(response: httpx.Response) -> bool:
    return response.status_code == 200


@operation("readyz")
def ready() -> Call[bool]:
    """Readiness: ``True`` when the server's store answers, ``False`` on its 503."""
    return Call("readyz", _ready, accept=frozenset({503}))


@operation("metrics")
def metrics() -> Call[str]:
    """Prometheus metrics, in the text exposition format (platform credential only)."""
    return Call("metrics", _text)


def _document(response: httpx.Response) -> JsonObject:
    body = _json(response)
    if not isinstance(body, dict):
        raise ProtocolError("/v1/openapi.json: not a JSON object")
    return body


@operation("openapi")
def openapi() -> Call[JsonObject]:
    """The server's OpenAPI document, as a dict."""
    return Call("openapi", _document)
