"""What :class:`Client` and :class:`AsyncClient` share: settings, and one attribute per
request-response operation (each bound to the client's own way of sending on access)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from . import _ops
from .errors import error_from_response

if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
USER_AGENT = "mistersmith-python/0.1.0"


def settings(
    base_url: str | None, api_key: str | None, headers: Mapping[str, str] | None
) -> tuple[str, dict[str, str]]:
    """The base URL and default headers, from the arguments or ``MISTERSMITH_URL`` and
    ``MISTERSMITH_API_KEY``."""
    url = base_url or os.environ.get("MISTERSMITH_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("MISTERSMITH_API_KEY")
    all_headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if key:
        all_headers["authorization"] = f"Bearer {key}"
    all_headers.update(headers or {})
    return url.rstrip("/"), all_headers


def finish(call: _ops.Call[T], response: httpx.Response) -> T:
    """The decoded answer of ``call``, or its error raised (the body must have been read)."""
    if response.is_success or response.status_code in call.accept:
        return call.parse(response)
    raise error_from_response(response)


class Operations:
    """The request-response operations, named as the client's methods.

    Accessed on a :class:`Client` each is a function returning the decoded answer; on an
    :class:`AsyncClient` a coroutine function. Their documentation is the builders' in
    ``_ops``.
    """

    # tasks
    submit = _ops.submit
    list_tasks = _ops.list_tasks
    get_task = _ops.get_task
    cancel = _ops.cancel
    get_patch = _ops.get_patch
    list_artifacts = _ops.list_artifacts
    get_artifact = _ops.get_artifact
    # approvals
    list_approvals = _ops.list_approvals
    list_task_approvals = _ops.list_task_approvals
    answer_approval = _ops.answer_approval
    # sessions
    start_session = _ops.start_session
    get_session = _ops.get_session
    add_turn = _ops.add_turn
    # fleet
    list_agents = _ops.list_agents
    list_nodes = _ops.list_nodes
    get_scaling = _ops.get_scaling
    list_providers = _ops.list_providers
    usage = _ops.usage
    # access
    create_key = _ops.create_key
    list_keys = _ops.list_keys
    revoke_key = _ops.revoke_key
    list_audit = _ops.list_audit
    # webhooks
    create_webhook = _ops.create_webhook
    list_webhooks = _ops.list_webhooks
    get_webhook = _ops.get_webhook
    delete_webhook = _ops.delete_webhook
    list_deliveries = _ops.list_deliveries
    replay_delivery = _ops.replay_delivery
    # schedules
    create_schedule = _ops.create_schedule
    list_schedules = _ops.list_schedules
    get_schedule = _ops.get_schedule
    delete_schedule = _ops.delete_schedule
    pause_schedule = _ops.pause_schedule
    resume_schedule = _ops.resume_schedule
    # MCP and operations
    call_mcp = _ops.call_mcp
    health = _ops.health
    ready = _ops.ready
    metrics = _ops.metrics
    openapi = _ops.openapi
