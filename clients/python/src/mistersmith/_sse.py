"""An incremental Server-Sent-Events parser (the WHATWG event-stream format).

Bytes go in as they arrive, in chunks of any size; whole frames come out. A line may end in
``\\n``, ``\\r`` or ``\\r\\n`` (even when a chunk boundary falls between the ``\\r`` and the
``\\n``), comments (``: keep-alive``) are counted and dropped, and a frame is dispatched at
the blank line that ends it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Frame", "SseParser"]


@dataclass(frozen=True)
class Frame:
    """One dispatched frame: its ``event`` type (``message`` when unnamed), ``data`` and ``id``.

    ``id`` is the frame's own ``id:`` field, or ``None`` when it had none (the stream's last
    event id is then unchanged).
    """

    event: str
    data: str
    id: str | None


class SseParser:
    """Turns chunks of an ``text/event-stream`` body into :class:`Frame` objects."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._started = False
        # a chunk ended in "\r": a "\n" opening the next chunk belongs to that line end
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_data = False
        self.comments = 0
        """Comment lines seen (the server's keep-alives)."""

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consumes ``chunk`` and returns the frames it completed, in order."""
        frames: list[Frame] = []
        data = chunk
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        self._after_cr = False
        self._buffer.extend(data)
        start = 0
        buf = self._buffer
        while True:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end = cr
                if cr + 1 < len(buf):
                    skip = 2 if buf[cr + 1] == 0x0A else 1
                else:
                    # "\r" is the buffer's last byte: the line ends here; a "\n" may follow
                    skip = 1
                    self._after_cr = True
            else:
                end = lf
                skip = 1
            frame = self._line(bytes(buf[start:end]))
            if frame is not None:
                frames.append(frame)
            start = end + skip
        del buf[:start]
        return frames

    def _line(self, raw: bytes) -> Frame | None:
        line = raw.decode("utf-8", errors="replace")
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self._id = value
        # "retry" and unknown fields are ignored: reconnection is the caller's policy
        return None

    def _dispatch(self) -> Frame | None:
        frame = None
        if self._has_data:
            frame = Frame(event=self._event or "message", data="\n".join(self._data), id=self._id)
        self._event = ""
        self._data = []
        self._has_data = False
        self._id = None
        return frame
