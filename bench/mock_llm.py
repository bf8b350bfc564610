#!/usr/bin/env python3
"""A mock of the Anthropic Messages API for benchmarks: stdlib only, asyncio, HTTP/1.1.

    python3 bench/mock_llm.py --port 9900 --deltas 30 --interval 1

`POST /v1/messages` (any query string, e.g. `?beta=true`) with `"stream": true` answers with
an event stream: message_start (usage.input_tokens), content_block_start (text), `--deltas`
content_block_delta text_delta events `--interval` seconds apart, content_block_stop,
message_delta (stop_reason end_turn, usage.output_tokens), message_stop. Every event has
`event:` and `data:` lines. A prompt may override the shape with `mock:deltas=N,interval=S`
and make the conversation multi-turn with `,tools=K`: while fewer than K tool results are in
the conversation and the request offers the `Bash` tool, the streamed text is followed by a
`tool_use` block calling Bash with `echo step I` (stop_reason tool_use); the turn after the
K-th result ends with text. Every turn is paced the same way, so a task of K tools lasts about
(K + 1) × N × S seconds plus the client's own time (`smith bench --scenario baseline` uses this
to keep Claude Code agents working through its measurement window). Without `"stream": true` it answers with a plain Message JSON.
Streams are sent with chunked transfer encoding and the connection is kept alive, so one
client connection can carry many requests.

`GET /stats` returns counters as JSON: streams active now, the most active at once, requests
by path and model, streams finished, clients that went away mid-stream, events sent.
One process holds well over 10,000 concurrent streams (it raises its open-files soft limit to
the hard limit at start-up); every stream is one coroutine and one timer.
"""

import argparse
import asyncio
import json
import re
import resource
import sys
import time
import uuid

MAX_HEADER = 64 * 1024
# A prompt may override the stream's shape: "mock:deltas=120,interval=1", and ask for tool
# calls: "mock:deltas=20,interval=1,tools=3".
OVERRIDE = re.compile(rb"mock:deltas=(\d+),interval=([0-9.]+)(?:,tools=(\d+))?")
# The tool a multi-turn conversation calls: harmless, and run by the client itself.
TOOL = "Bash"
MAX_BODY = 64 * 1024 * 1024


class Stats:
    def __init__(self):
        self.active = 0
        self.peak = 0
        self.connections = 0
        self.connections_peak = 0
        self.connections_total = 0
        self.requests = {}
        self.models = {}
        self.finished = 0
        self.disconnected = 0
        self.events = 0
        self.tool_uses = 0
        self.started = time.time()

    def as_json(self):
        return {
            "active": self.active,
            "peak": self.peak,
            "connections": self.connections,
            "connections_peak": self.connections_peak,
            "connections_total": self.connections_total,
            "requests": self.requests,
            "models": self.models,
            "finished": self.finished,
            "disconnected": self.disconnected,
            "events": self.events,
            "tool_uses": self.tool_uses,
            "uptime_s": round(time.time() - self.started, 1),
        }


STATS = Stats()
ARGS = None


def sse(event, data):
    return b"event: " + event.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def chunk(payload):
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def head(status, reason, headers):
    lines = ["HTTP/1.1 %d %s" % (status, reason)]
    lines += ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_response(writer, status, reason, body, keep_alive):
    payload = json.dumps(body).encode()
    writer.write(
        head(
            status,
            reason,
            [
                ("content-type", "application/json"),
                ("content-length", str(len(payload))),
                ("request-id", "req_" + uuid.uuid4().hex[:24]),
                ("connection", "keep-alive" if keep_alive else "close"),
            ],
        )
        + payload
    )


async def read_request(reader):
    """One request: (method, target, headers dict, body bytes), or None at end of stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise ValueError("connection closed inside a request head")
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too large")
    lines = raw.decode("latin-1").split("\r\n")
    while lines and lines[0] == "":  # stray CRLF between requests
        lines.pop(0)
    if not lines:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line %r" % lines[0])
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        return method, target, version, headers, None  # body read after the 100
    return method, target, version, headers, await read_body(reader, headers)


async def read_body(reader, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers, up to the empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise ValueError("request body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or "0")
    if length > MAX_BODY:
        raise ValueError("request body too large")
    return await reader.readexactly(length) if length else b""


def message(model, text, input_tokens, output_tokens):
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text is not None else [],
        "stop_reason": "end_turn" if text is not None else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        },
    }


def tool_results(req_json):
    """How many tool results the conversation holds."""
    n = 0
    for m in req_json.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            n += sum(1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    return n


def offers(req_json, name):
    return any(isinstance(t, dict) and t.get("name") == name for t in req_json.get("tools") or [])


async def stream(writer, model, input_tokens, keep_alive, deltas, interval, tool_step=None):
    """Writes one streamed message; returns False when the client went away. `tool_step`: end
    with a tool_use block calling TOOL (`echo step <tool_step>`) instead of end_turn."""
    writer.write(
        head(
            200,
            "OK",
            [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("cache-control", "no-cache"),
                ("transfer-encoding", "chunked"),
                ("request-id", "req_" + uuid.uuid4().hex[:24]),
                ("connection", "keep-alive" if keep_alive else "close"),
            ],
        )
    )
    start = message(model, None, input_tokens, 1)
    first = sse("message_start", {"type": "message_start", "message": start})
    first += sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    first += sse("ping", {"type": "ping"})
    writer.write(chunk(first))
    STATS.events += 3
    try:
        await writer.drain()
        for i in range(deltas):
            await asyncio.sleep(interval)
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ARGS.text % i}}
            writer.write(chunk(sse("content_block_delta", delta)))
            STATS.events += 1
            await writer.drain()
        end = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        stop_reason = "end_turn"
        if tool_step is not None:
            stop_reason = "tool_use"
            block = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": TOOL, "input": {}}
            args = {"command": "echo step %d" % tool_step, "description": "Print step %d" % tool_step}
            end += sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block})
            end += sse("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)}})
            end += sse("content_block_stop", {"type": "content_block_stop", "index": 1})
            STATS.events += 3
            STATS.tool_uses += 1
        end += sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": max(deltas, 1) * 3}},
        )
        end += sse("message_stop", {"type": "message_stop"})
        writer.write(chunk(end) + b"0\r\n\r\n")
        STATS.events += 3
        await writer.drain()
    except (ConnectionError, OSError):
        return False
    if writer.is_closing():
        return False
    return True


async def handle(reader, writer):
    STATS.connections += 1
    STATS.connections_total += 1
    STATS.connections_peak = max(STATS.connections_peak, STATS.connections)
    try:
        while True:
            try:
                req = await read_request(reader)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                json_response(writer, 400, "Bad Request", {"type": "error", "error": {"type": "invalid_request_error", "message": str(e)}}, False)
                break
            if req is None:
                break
            method, target, version, headers, body = req
            if body is None:  # Expect: 100-continue
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, headers)
            conn = headers.get("connection", "").lower()
            keep_alive = (version == "HTTP/1.1" and conn != "close") or (version == "HTTP/1.0" and conn == "keep-alive")
            path = target.split("?", 1)[0]
            STATS.requests[method + " " + path] = STATS.requests.get(method + " " + path, 0) + 1
            if method == "GET" and path == "/stats":
                json_response(writer, 200, "OK", STATS.as_json(), keep_alive)
            elif method == "POST" and path == "/v1/messages":
                try:
                    req_json = json.loads(body or b"{}")
                except ValueError as e:
                    json_response(writer, 400, "Bad Request", {"type": "error", "error": {"type": "invalid_request_error", "message": "body is not JSON: %s" % e}}, keep_alive)
                    await writer.drain()
                    continue
                model = req_json.get("model") or "claude-mock"
                STATS.models[model] = STATS.models.get(model, 0) + 1
                input_tokens = max(1, len(body) // 4)
                if req_json.get("stream"):
                    STATS.active += 1
                    STATS.peak = max(STATS.peak, STATS.active)
                    try:
                        deltas, interval, tool_step = ARGS.deltas, ARGS.interval, None
                        m = OVERRIDE.search(body)
                        if m:
                            deltas, interval = int(m.group(1)), float(m.group(2))
                            done = tool_results(req_json)
                            if m.group(3) and done < int(m.group(3)) and offers(req_json, TOOL):
                                tool_step = done + 1
                        ok = await stream(writer, model, input_tokens, keep_alive, deltas, interval, tool_step)
                    finally:
                        STATS.active -= 1
                    if not ok:
                        STATS.disconnected += 1
                        break
                    STATS.finished += 1
                else:
                    json_response(writer, 200, "OK", message(model, "Hello from the mock.", input_tokens, 5), keep_alive)
            elif method == "POST" and path == "/v1/messages/count_tokens":
                json_response(writer, 200, "OK", {"input_tokens": max(1, len(body or b"") // 4)}, keep_alive)
            else:
                json_response(writer, 404, "Not Found", {"type": "error", "error": {"type": "not_found_error", "message": "%s %s" % (method, path)}}, keep_alive)
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        STATS.connections -= 1
        try:
            writer.close()
        except Exception:
            pass


async def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9900)
    p.add_argument("--deltas", type=int, default=30, help="text_delta events per streamed message")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between deltas")
    p.add_argument("--text", default="tick %d ", help="the text of delta i (printf-style)")
    p.add_argument("--stats-every", type=float, default=0, help="print /stats to stderr every so many seconds")
    ARGS = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await asyncio.start_server(handle, ARGS.host, ARGS.port, backlog=32768, limit=MAX_HEADER)
    print("mock_llm listening on %s:%d (%d deltas every %.3g s; open files %d)" % (ARGS.host, ARGS.port, ARGS.deltas, ARGS.interval, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), file=sys.stderr, flush=True)
    if ARGS.stats_every > 0:
        async def report():
            while True:
                await asyncio.sleep(ARGS.stats_every)
                print(json.dumps(STATS.as_json()), file=sys.stderr, flush=True)
        asyncio.get_running_loop().create_task(report())
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
