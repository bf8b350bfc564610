"""MisterSmith's Python client: tasks, sessions, events and the rest of the HTTP API.

>>> from mistersmith import Client
>>> with Client("http://127.0.0.1:8080") as smith:
...     task = smith.submit("echo", "hi")
...     for event in smith.follow(task.id):
...         print(event.kind, event.data)
...     print(smith.wait(task.id).result)

:class:`Client` is synchronous, :class:`AsyncClient` its asyncio twin; both have one method
per operation of the API's OpenAPI document (:func:`operations` lists them), return the
typed models of :mod:`mistersmith.models`, and raise :class:`ApiError` subclasses carrying
the API's error code.
"""

from ._ops import NOT_OFFERED, ROUTES, operations
from .aio import AsyncClient
from .client import Client
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionLost,
    Forbidden,
    InsufficientStorage,
    InternalError,
    InvalidArgument,
    MethodNotAllowed,
    MisterSmithError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    TransportError,
    Unauthenticated,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from .models import (
    TERMINAL_EVENT_KINDS,
    TERMINAL_STATUSES,
    Agent,
    ApiKey,
    Approval,
    ApprovalPage,
    Artifact,
    AuditPage,
    AuditRecord,
    CreatedKey,
    Delivery,
    DeliveryPage,
    Event,
    EventKind,
    Health,
    NewSession,
    Node,
    Patch,
    Provider,
    Retention,
    Scaling,
    Schedule,
    Session,
    Task,
    TaskListItem,
    TaskPage,
    TaskStatus,
    Usage,
    UsageTotals,
    Webhook,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "operations",
    "ROUTES",
    "NOT_OFFERED",
    # errors
    "MisterSmithError",
    "ApiError",
    "TransportError",
    "ConnectionLost",
    "WaitTimeout",
    "ProtocolError",
    "InvalidArgument",
    "BadRequest",
    "Unauthenticated",
    "Unauthorized",
    "PermissionDenied",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "TooLarge",
    "UnsupportedMediaType",
    "Unprocessable",
    "ValidationError",
    "RateLimited",
    "QuotaExceeded",
    "InternalError",
    "Unavailable",
    "InsufficientStorage",
    # models
    "TaskStatus",
    "EventKind",
    "TERMINAL_STATUSES",
    "TERMINAL_EVENT_KINDS",
    "Task",
    "TaskListItem",
    "TaskPage",
    "Event",
    "Retention",
    "Session",
    "NewSession",
    "Agent",
    "Usage",
    "UsageTotals",
    "Node",
    "Scaling",
    "Provider",
    "Health",
    "ApiKey",
    "CreatedKey",
    "AuditRecord",
    "AuditPage",
    "Artifact",
    "Patch",
    "Approval",
    "ApprovalPage",
    "Webhook",
    "Delivery",
    "DeliveryPage",
    "Schedule",
]
