"""What the event streams of both clients share: the resume point, frame decoding, backoff.

A stream is read over one connection after another: each opens with ``Last-Event-ID`` set to
the id of the last frame delivered, so the server replays exactly what followed it. Frames
at or below that id (which a server never sends, but a proxy might replay) are dropped, so
the caller sees every event once and in order.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx

from ._decode import decode
from ._sse import Frame
from .errors import ApiError, ConnectionLost, ProtocolError, WaitTimeout
from .models import Event, Retention

#: Answers to a stream request that are worth retrying (the server restarting, a quota).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: First pause before reconnecting, and the most it grows to.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0

StreamItem = Event | Retention


class Resume:
    """A stream's resume point, and the decoding of its frames."""

    def __init__(self, after: int | None) -> None:
        self.last = after

    def headers(self) -> dict[str, str]:
        return {} if self.last is None else {"Last-Event-ID": str(self.last)}

    def accept(self, frame: Frame) -> StreamItem | None:
        """The frame's item, or ``None`` for a frame already delivered."""
        number: int | None = None
        if frame.id is not None:
            try:
                number = int(frame.id)
            except ValueError:
                raise ProtocolError(f"an event stream frame has a non-numeric id {frame.id!r}") from None
            if self.last is not None and number <= self.last:
                return None
        try:
            data: Any = json.loads(frame.data)
        except ValueError as e:
            raise ProtocolError(f"an event stream frame's data is not JSON: {e}") from None
        item: StreamItem
        if frame.event == "retention":
            item = decode(Retention, data)
        else:
            item = decode(Event, data)
        if number is not None:
            self.last = number
        return item


def retryable(error: BaseException) -> bool:
    """Whether a stream that failed with ``error`` should be reconnected."""
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, ApiError) and error.status in RETRY_STATUSES


class Backoff:
    """Pauses between reconnections, growing to :data:`BACKOFF_MAX`, for at most ``timeout``
    seconds of failing in a row (``None``: for ever) and never past ``deadline``."""

    def __init__(self, timeout: float | None, deadline: float | None) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.failures = 0
        self.failing_since: float | None = None

    def reset(self) -> None:
        """A frame arrived: the connection works again."""
        self.failures = 0
        self.failing_since = None

    def delay(self, error: BaseException | None, what: str) -> float:
        """The pause before the next attempt; raises when there should be none."""
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise WaitTimeout(f"{what}: not finished in time") from error
        if self.failing_since is None:
            self.failing_since = now
        elif self.timeout is not None and now - self.failing_since > self.timeout:
            raise ConnectionLost(f"{what}: could not resume for {self.timeout:g} s: {error}") from error
        self.failures += 1
        pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - now))
        return pause

    def timeout_for(self, read: float, connect: float) -> httpx.Timeout:
        """The timeouts of one connection: the stream's read timeout, cut at the deadline."""
        if self.deadline is None:
            return httpx.Timeout(connect, read=read)
        left = max(0.05, self.deadline - time.monotonic())
        return httpx.Timeout(min(connect, left), read=min(read, left))
