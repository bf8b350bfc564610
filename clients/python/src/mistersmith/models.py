"""Typed models of the API's answers, one dataclass per schema of the OpenAPI document.

Every model is a frozen dataclass whose fields are the schema's (names and meanings as the
document gives them), with timestamps as aware :class:`~datetime.datetime` objects and
free-form JSON (inputs, results, metadata, event data) as plain Python values. Each keeps the
answer it was decoded from in ``raw``, where a field a newer server added can be read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TaskStatus",
    "EventKind",
    "TERMINAL_STATUSES",
    "TERMINAL_EVENT_KINDS",
    "Model",
    "Usage",
    "Budget",
    "TaskError",
    "TaskWebhook",
    "TaskWorkspace",
    "Task",
    "TaskListItem",
    "TaskPage",
    "Event",
    "Retention",
    "Session",
    "NewSession",
    "Pricing",
    "RateLimit",
    "AgentWorkspace",
    "Agent",
    "UsageTotal",
    "UsageTotals",
    "Node",
    "Scaling",
    "RateBucket",
    "Provider",
    "Health",
    "ApiKey",
    "CreatedKey",
    "AuditRecord",
    "AuditPage",
    "Artifact",
    "Patch",
    "ApprovalTool",
    "ApprovalAnswer",
    "Approval",
    "ApprovalPage",
    "Webhook",
    "Delivery",
    "DeliveryPage",
    "Schedule",
]

TaskStatus = Literal[
    "scheduled",
    "queued",
    "running",
    "waiting_input",
    "parked",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "expired",
]
"""A task's status; the last five are terminal (:data:`TERMINAL_STATUSES`)."""

EventKind = Literal[
    "task.queued",
    "task.started",
    "output",
    "tool_use",
    "tool_result",
    "usage",
    "task.retrying",
    "task.succeeded",
    "task.failed",
    "task.cancelled",
    "task.timed_out",
    "discovery",
    "message",
    "system",
    "workspace.ready",
    "workspace.diff",
    "artifacts.stored",
    "approval.requested",
    "input.requested",
    "approval.decided",
    "task.scheduled",
    "task.expired",
    "task.parked",
]
"""An event's kind; a task's stream closes after one of :data:`TERMINAL_EVENT_KINDS`."""

TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out", "expired"})
TERMINAL_EVENT_KINDS: frozenset[str] = frozenset(
    {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out", "task.expired"}
)


@dataclass(frozen=True, kw_only=True)
class Model:
    """Base of every model: ``raw`` is the JSON object the model was decoded from."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Usage(Model):
    """Tokens and cost: a task's over its attempts, an agent's or session's over its tasks."""

    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, kw_only=True)
class Budget(Model):
    """Limits on what one task may spend; ``None`` for no limit."""

    max_tokens: int | None
    max_cost_usd: float | None


@dataclass(frozen=True, kw_only=True)
class TaskError(Model):
    """Why a task's last attempt failed (``budget_exceeded``, ``agent_failed``…)."""

    code: str
    message: str


@dataclass(frozen=True, kw_only=True)
class TaskWebhook(Model):
    """A task's own webhook; ``secret`` only in the answer that generated it."""

    url: str
    secret: str | None = None


@dataclass(frozen=True, kw_only=True)
class TaskWorkspace(Model):
    """What a task sets of its agent's workspace: the ``base`` its checkout starts from."""

    base: str


@dataclass(frozen=True, kw_only=True)
class Task(Model):
    """A task as stored and served (``GET /v1/tasks/{id}``)."""

    id: str
    agent: str
    input: Any
    status: TaskStatus
    priority: int
    timeout_ms: int | None
    max_attempts: int
    attempt: int
    idempotency_key: str | None
    session_id: str | None
    parent_id: str | None
    budget: Budget
    tenant: str
    metadata: dict[str, Any]
    result: Any
    error: TaskError | None
    usage: Usage
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker: str | None
    workspace: TaskWorkspace | None
    output_schema: Any
    webhook: TaskWebhook | None
    run_at: dt.datetime | None
    expires_at: dt.datetime | None
    concurrency_key: str | None
    #: The W3C trace context the task's spans (and its agent's) join; ``None`` when untraced.
    traceparent: str | None

    @property
    def terminal(self) -> bool:
        """Whether the task has finished (succeeded, failed, cancelled, timed out, expired)."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, kw_only=True)
class TaskListItem(Task):
    """A task as a list shows it: its input or result may be left out when large."""

    input_omitted: bool
    input_bytes: int | None
    result_omitted: bool
    result_bytes: int | None


@dataclass(frozen=True, kw_only=True)
class TaskPage(Model):
    """A page of tasks, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[TaskListItem]
    next_cursor: str | None


@dataclass(frozen=True, kw_only=True)
class Event(Model):
    """An event of a task (or of the fleet: ``task_id`` is then ``None``)."""

    task_id: str | None
    seq: int
    kind: EventKind
    at: dt.datetime
    data: Any
    agent: str | None
    tenant: str | None
    attempt: int
    pos: int

    @property
    def terminal(self) -> bool:
        """Whether this event ends its task (and its task's stream)."""
        return self.kind in TERMINAL_EVENT_KINDS


@dataclass(frozen=True, kw_only=True)
class Retention(Model):
    """On the all-events feed: the resume point was below the retention horizon.

    Events of finished tasks up to ``horizon`` were deleted by retention; the feed goes on
    after it.
    """

    type: str
    after: int
    horizon: int
    first_position: int
    message: str


@dataclass(frozen=True, kw_only=True)
class Session(Model):
    """A multi-turn conversation with one agent; its turns are tasks, oldest first."""

    id: str
    agent: str
    tenant: str
    metadata: dict[str, Any]
    created_at: dt.datetime
    usage: Usage
    turns: list[Task]


@dataclass(frozen=True, kw_only=True)
class NewSession(Model):
    """A session just started: ``turns`` holds the first turn when an input was given."""

    id: str
    agent: str
    tenant: str
    metadata: dict[str, Any]
    created_at: dt.datetime
    turns: list[Task]


@dataclass(frozen=True, kw_only=True)
class Pricing(Model):
    """Prices in USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True, kw_only=True)
class RateLimit(Model):
    """A provider's rate limit shared by the fleet; each figure optional."""

    requests_per_minute: int | None
    tokens_per_minute: int | None


@dataclass(frozen=True, kw_only=True)
class AgentWorkspace(Model):
    """An agent's git workspace settings (``repo`` with any password redacted)."""

    repo: str
    base: str
    mode: str
    setup: list[str]
    keep: str
    push: bool
    author: str | None = None


@dataclass(frozen=True, kw_only=True)
class Agent(Model):
    """An agent definition with its live counts, usage and breaker state (``AgentSummary``)."""

    name: str
    executor: str
    concurrency: int
    timeout: str | None
    max_attempts: int
    retry_backoff: str
    retry_backoff_max: str
    kill_grace: str
    command: str | None
    args: list[str]
    input: str
    cwd: str | None
    env: dict[str, str]
    max_result_bytes: int
    model: str | None
    system_prompt: str | None
    allowed_tools: list[str]
    disallowed_tools: list[str]
    permission_mode: str | None
    max_turns: int | None
    mcp_config: str | None
    collaborate: bool
    stall_timeout: str | None
    base_url: str | None
    api_key: str | None
    api_key_env: str | None
    max_output_tokens: int
    budget: Budget
    pricing: Pricing | None
    breaker_failures: int
    breaker_cooldown: str
    workspace: AgentWorkspace | None
    queued: int
    running: int
    usage: Usage
    breaker: Literal["closed", "open", "half_open"]
    output_schema: Any
    approve: list[str]
    approval_timeout: str
    on_approval_timeout: Literal["allow", "deny"]
    account: str | None
    concurrency_key: str | None
    max_per_key: int | None
    rate_limit: RateLimit | None


@dataclass(frozen=True, kw_only=True)
class UsageTotal(Model):
    """The totals of one agent or tenant."""

    key: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, kw_only=True)
class UsageTotals(Model):
    """Token and cost totals grouped ``by`` agent or tenant, ordered by key."""

    by: Literal["agent", "tenant"]
    items: list[UsageTotal]


@dataclass(frozen=True, kw_only=True)
class Node(Model):
    """A supervisor, worker or gateway process and its health."""

    id: str
    role: Literal["supervisor", "worker", "gateway"]
    version: str
    address: str | None
    status: Literal["alive", "draining", "stopped", "dead", "quarantined"]
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    load: Any


@dataclass(frozen=True, kw_only=True)
class Scaling(Model):
    """The autoscaler's latest decision: desired against current agent slots."""

    desired_slots: int
    current_slots: int
    load: float
    utilization: float
    arrival_rate: float
    task_seconds: float | None
    running: int
    queued: int
    oldest_queued_seconds: float
    workers: int
    min_agents: int
    max_agents: int
    target_utilization: float
    computed_at: dt.datetime
    supervisor: str
    age_seconds: float


@dataclass(frozen=True, kw_only=True)
class RateBucket(Model):
    """One fleet-wide token bucket of a provider account."""

    per_minute: float
    capacity: float
    level: float


@dataclass(frozen=True, kw_only=True)
class Provider(Model):
    """A provider account with a rate limit, and how full its buckets are now."""

    account: str
    requests: RateBucket | None
    tokens: RateBucket | None


@dataclass(frozen=True, kw_only=True)
class Health(Model):
    """Liveness: ``status`` is ``ok``."""

    status: str


@dataclass(frozen=True, kw_only=True)
class ApiKey(Model):
    """An API key, without its secret."""

    id: str
    tenant: str
    scopes: list[Literal["tasks:write", "tasks:read", "admin"]]
    name: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class CreatedKey(Model):
    """A key just created; ``secret`` (the whole ``smk_…`` key) is shown only here."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, kw_only=True)
class AuditRecord(Model):
    """One mutating request, as the audit log recorded it."""

    id: int
    at: dt.datetime
    actor: str
    tenant: str
    action: str
    target: str | None
    source: str
    status: int


@dataclass(frozen=True, kw_only=True)
class AuditPage(Model):
    """Audit records, oldest first; pass ``next_after`` as ``after`` for the next page."""

    items: list[AuditRecord]
    next_after: int | None


@dataclass(frozen=True, kw_only=True)
class Artifact(Model):
    """A file an agent left in ``$SMITH_ARTIFACTS``."""

    name: str
    size: int
    sha256: str
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class Patch(Model):
    """What a task changed in its git workspace: ``git diff --binary`` of its commits."""

    patch: str
    branch: str | None
    from_commit: str | None
    to_commit: str | None


@dataclass(frozen=True, kw_only=True)
class ApprovalTool(Model):
    """The tool call an approval asks about."""

    name: str
    input: Any


@dataclass(frozen=True, kw_only=True)
class ApprovalAnswer(Model):
    """How a request of a person was answered, by whom and when."""

    decision: Literal["allow", "deny"]
    by: str
    at: dt.datetime
    message: str | None = None
    input: dict[str, Any] | None = None
    answer: str | None = None


@dataclass(frozen=True, kw_only=True)
class Approval(Model):
    """A request a running attempt made of a person: an approval or a question."""

    id: str
    task_id: str
    tenant: str
    agent: str
    attempt: int
    kind: Literal["approval", "input"]
    status: Literal["pending", "allowed", "denied", "answered", "cancelled"]
    tool: ApprovalTool | None
    text: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    on_timeout: Literal["allow", "deny"]
    answer: ApprovalAnswer | None
    used: bool


@dataclass(frozen=True, kw_only=True)
class ApprovalPage(Model):
    """Requests, newest first; pass ``next_before`` as ``before`` for the next page."""

    items: list[Approval]
    next_before: str | None = None


@dataclass(frozen=True, kw_only=True)
class Webhook(Model):
    """A subscription of a tenant to event kinds; ``secret`` only when just generated."""

    id: str
    tenant: str
    url: str
    kinds: list[str]
    description: str | None
    created_at: dt.datetime
    secret: str | None = None


@dataclass(frozen=True, kw_only=True)
class Delivery(Model):
    """One event sent to one subscription, with its attempts and state."""

    id: str
    webhook_id: str | None
    tenant: str
    task_id: str | None
    event_pos: int
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class DeliveryPage(Model):
    """Deliveries, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[Delivery]
    next_cursor: str | None


@dataclass(frozen=True, kw_only=True)
class Schedule(Model):
    """A cron schedule of a tenant, with its next fire times when asked for."""

    id: str
    tenant: str
    name: str
    agent: str
    input: Any
    metadata: dict[str, Any]
    priority: int
    timeout_ms: int | None
    max_attempts: int | None
    cron: str
    timezone: str
    overlap: Literal["skip", "enqueue", "cancel_previous"]
    catchup: str
    paused: bool
    next_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_task_id: str | None
    skipped: int
    last_skipped_at: dt.datetime | None
    missed: int
    created_at: dt.datetime
    updated_at: dt.datetime
    last_task_status: TaskStatus | None = None
    upcoming: list[dt.datetime] | None = None
