"""The SSE parser on its own: chunking, line ends, comments, multi-line data."""

from __future__ import annotations

import pytest

from mistersmith._sse import Frame, SseParser

STREAM = (
    b": keep-alive\n\n"
    b"id: 1\nevent: task.queued\ndata: {\"a\":1}\n\n"
    b"id:2\r\nevent:output\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"data: no id\rdata: and a CR\r\r"
    b"event: ignored-without-data\nid: 9\n\n"
    b"retry: 10\nfield-unknown: x\ndata:  two spaces keep one\n\n"
)
WANT = [
    Frame(event="task.queued", data='{"a":1}', id="1"),
    Frame(event="output", data="line one\nline two", id="2"),
    Frame(event="message", data="no id\nand a CR", id=None),
    Frame(event="message", data=" two spaces keep one", id=None),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_chunking_gives_the_same_frames(size: int) -> None:
    parser = SseParser()
    frames: list[Frame] = []
    for start in range(0, len(STREAM), size):
        frames += parser.feed(STREAM[start : start + size])
    assert frames == WANT
    assert parser.comments == 1


def test_a_multibyte_character_split_across_chunks() -> None:
    data = "data: größe ✓\n\n".encode()
    parser = SseParser()
    frames = [f for i in range(len(data)) for f in parser.feed(data[i : i + 1])]
    assert frames == [Frame(event="message", data="größe ✓", id=None)]


def test_an_unfinished_frame_waits() -> None:
    parser = SseParser()
    assert parser.feed(b"\xef\xbb\xbfid: 5\ndata: x\n") == []
    assert parser.feed(b"\n") == [Frame(event="message", data="x", id="5")]


def test_resume_drops_what_was_delivered_and_reads_retention() -> None:
    from mistersmith import Event, Retention
    from mistersmith._stream import Resume

    resume = Resume(after=5)
    assert resume.headers() == {"Last-Event-ID": "5"}
    notice = resume.accept(
        Frame(
            event="retention",
            data='{"type":"retention","after":5,"horizon":100,"first_position":101,"message":"deleted"}',
            id="100",
        )
    )
    assert isinstance(notice, Retention) and notice.horizon == 100 and resume.last == 100
    event = (
        '{"task_id":null,"seq":0,"kind":"system","at":"2025-11-27T12:20:00.123456Z","data":{},'
        '"agent":null,"tenant":null,"attempt":0,"pos":%d}'
    )
    assert resume.accept(Frame(event="system", data=event % 100, id="100")) is None
    got = resume.accept(Frame(event="system", data=event % 101, id="101"))
    assert isinstance(got, Event) and got.pos == 101 and got.at.microsecond == 123456
    assert resume.headers() == {"Last-Event-ID": "101"}
