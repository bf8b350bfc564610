#!/usr/bin/env python3
"""Helpers for bench/llm-agents.sh and bench/claude-agents.sh (stdlib only).

    agents_bench.py submit  --server URL --agent NAME --count N [--conns C] [--input TEXT] [--ids FILE]
    agents_bench.py wait    --server URL --agent NAME --running N | --idle  [--pid PID] [--timeout S]
    agents_bench.py steady  --pid PID --db FILE [--seconds S] [--server URL --agent NAME] [--exe PATH]
    agents_bench.py procs   --exe PATH           # RSS/PSS of every process running that binary
    agents_bench.py outcome --db FILE --agent NAME [--ids FILE] [--timing]
    agents_bench.py proc    --pid PID            # RSS, HWM, CPU (own and reaped children)

Every command prints one JSON object on stdout; progress goes to stderr.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    """(utime+stime, cutime+cstime) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def threads(pid):
    return status_kb(pid, "Threads")


def fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def rollup(pid):
    """(Rss, Pss) in kB from smaps_rollup."""
    rss = pss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def total_cpu():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def pids_of(exe):
    exe = os.path.realpath(exe)
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % name) == exe:
                out.append(int(name))
        except OSError:
            pass
    return out


def procs_summary(exe):
    """Totals over every live process of `exe`: count, RSS, PSS, peak RSS (kB)."""
    n = rss = pss = hwm_max = rss_max = pss_max = 0
    for pid in pids_of(exe):
        try:
            r, p = rollup(pid)
            h = status_kb(pid, "VmHWM")
        except OSError:
            continue
        n += 1
        rss += r
        pss += p
        hwm_max = max(hwm_max, h)
        rss_max = max(rss_max, r)
        pss_max = max(pss_max, p)
    return {"count": n, "rss_kb": rss, "pss_kb": pss, "max_rss_kb": rss_max, "max_pss_kb": pss_max, "max_hwm_kb": hwm_max}


# ---------------------------------------------------------------------------------------------
# HTTP


def get_json(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def agent_counts(server, agent):
    data = get_json(server.rstrip("/") + "/v1/agents")
    items = data.get("items", data) if isinstance(data, dict) else data
    for a in items:
        if a.get("name") == agent:
            return a.get("running", 0), a.get("queued", 0)
    raise SystemExit("no agent %r in /v1/agents" % agent)


async def http_post(reader, writer, host, path, body):
    writer.write(
        (
            "POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (path, host, len(body))
        ).encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        data = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, bytes(data)
    n = int(headers.get("content-length", "0"))
    return status, await reader.readexactly(n)


async def submit(args):
    host, _, port = args.server.split("://", 1)[1].rstrip("/").partition(":")
    port = int(port or 80)
    body = json.dumps({"agent": args.agent, "input": args.input, "max_attempts": args.max_attempts}).encode()
    todo = list(range(args.count))
    ids, errors = [], []

    async def conn():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while todo:
                todo.pop()
                status, data = await http_post(reader, writer, host, "/v1/tasks", body)
                if status in (200, 201):
                    ids.append(json.loads(data)["id"])
                else:
                    errors.append("%d %s" % (status, data[:300].decode("utf-8", "replace")))
        finally:
            writer.close()

    t0 = time.time()
    await asyncio.gather(*(conn() for _ in range(min(args.conns, args.count))))
    dt = time.time() - t0
    if args.ids:
        with open(args.ids, "w") as f:
            f.write("\n".join(ids) + "\n")
    out = {"submitted": len(ids), "errors": len(errors), "seconds": round(dt, 3), "per_s": round(len(ids) / dt, 1), "t0": t0}
    if errors:
        out["first_errors"] = errors[:5]
    return out


# ---------------------------------------------------------------------------------------------
# commands


def cmd_submit(args):
    return asyncio.run(submit(args))


def cmd_wait(args):
    """Waits until the agent's `running` reaches --running (or, with --idle, running and
    queued reach 0); prints the time it took and samples on the way."""
    t0 = time.time()
    best = 0
    last_log = 0
    rss_max = 0
    while True:
        now = time.time()
        try:
            running, queued = agent_counts(args.server, args.agent)
        except Exception as e:  # the server may be too busy to answer quickly
            log("  /v1/agents failed: %s" % e)
            running, queued = -1, -1
        best = max(best, running)
        streams = -1
        if args.mock:
            try:
                streams = get_json(args.mock.rstrip("/") + "/stats")["active"]
            except Exception:
                pass
        if args.pid:
            try:
                rss_max = max(rss_max, status_kb(args.pid, "VmRSS"))
            except OSError:
                return {"error": "smith (pid %d) is gone" % args.pid, "seconds": round(now - t0, 2), "max_running": best}
        if now - last_log >= args.log_every:
            extra = ""
            if args.pid:
                extra = " rss=%d MB fds=%d threads=%d" % (status_kb(args.pid, "VmRSS") // 1024, fds(args.pid), threads(args.pid))
            if args.exe:
                s = procs_summary(args.exe)
                extra += " procs=%d rss=%d MB pss=%d MB" % (s["count"], s["rss_kb"] // 1024, s["pss_kb"] // 1024)
            if args.mock:
                extra += " streams=%d" % streams
            log("  t=%.1fs running=%d queued=%d%s avail=%d MB" % (now - t0, running, queued, extra, meminfo()["MemAvailable"] // 1024))
            last_log = now
        if args.idle and running == 0 and queued == 0:
            break
        if args.running is not None and running >= args.running and (args.streams is None or streams >= args.streams):
            break
        if now - t0 > args.timeout:
            return {"timeout": True, "seconds": round(now - t0, 2), "running": running, "queued": queued, "streams": streams, "max_running": best}
        time.sleep(args.every)
    return {"seconds": round(time.time() - t0, 2), "running": running, "queued": queued, "streams": streams, "max_running": best, "smith_rss_max_kb": rss_max}


def max_pos(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return c.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()[0]
    finally:
        c.close()


def cmd_steady(args):
    """Samples the smith process over --seconds: RSS, CPU, events written per second."""
    pid = args.pid
    rss0 = status_kb(pid, "VmRSS")
    own0, kids0 = cpu_ticks(pid)
    busy0, tot0 = total_cpu()
    pos0 = max_pos(args.db) if args.db else 0
    t0 = time.time()
    samples = []
    counts = []
    procs = []
    avail = []
    mock = []
    while time.time() - t0 < args.seconds:
        samples.append(status_kb(pid, "VmRSS"))
        avail.append(meminfo()["MemAvailable"])
        if args.server:
            try:
                counts.append(agent_counts(args.server, args.agent))
            except Exception:
                pass
        if args.exe:
            procs.append(procs_summary(args.exe))
        if args.mock:
            try:
                mock.append(get_json(args.mock.rstrip("/") + "/stats")["active"])
            except Exception:
                pass
        time.sleep(args.every)
    t1 = time.time()
    own1, kids1 = cpu_ticks(pid)
    busy1, tot1 = total_cpu()
    pos1 = max_pos(args.db) if args.db else 0
    dt = t1 - t0
    out = {
        "seconds": round(dt, 2),
        "rss_start_kb": rss0,
        "rss_median_kb": int(statistics.median(samples)),
        "rss_max_kb": max(samples),
        "vmhwm_kb": status_kb(pid, "VmHWM"),
        "threads": threads(pid),
        "fds": fds(pid),
        "cpu_smith_pct": round(100 * (own1 - own0) / dt, 1),
        "cpu_children_reaped_pct": round(100 * (kids1 - kids0) / dt, 1),
        "cpu_machine_pct": round(100 * (busy1 - busy0) / max(1, tot1 - tot0), 1),
        "events": pos1 - pos0,
        "events_per_s": round((pos1 - pos0) / dt, 1),
        "mem_available_min_kb": min(avail),
        "loadavg1": loadavg(),
    }
    if counts:
        out["running_min"] = min(c[0] for c in counts)
        out["running_max"] = max(c[0] for c in counts)
        out["queued_max"] = max(c[1] for c in counts)
    if mock:
        out["mock_streams_min"] = min(mock)
        out["mock_streams_max"] = max(mock)
    if procs:
        out["procs_min"] = min(p["count"] for p in procs)
        out["procs_max"] = max(p["count"] for p in procs)
        out["procs_rss_kb_median"] = int(statistics.median(p["rss_kb"] for p in procs))
        out["procs_pss_kb_median"] = int(statistics.median(p["pss_kb"] for p in procs))
        out["procs_rss_kb_max"] = max(p["rss_kb"] for p in procs)
        out["procs_pss_kb_max"] = max(p["pss_kb"] for p in procs)
        out["proc_max_hwm_kb"] = max(p["max_hwm_kb"] for p in procs)
    return out


def cmd_procs(args):
    s = procs_summary(args.exe)
    s["mem_available_kb"] = meminfo()["MemAvailable"]
    return s


def cmd_proc(args):
    own, kids = cpu_ticks(args.pid)
    busy, total = total_cpu()
    return {
        "machine_busy_s": busy / CLK_TCK,
        "machine_total_s": total / CLK_TCK,
        "rss_kb": status_kb(args.pid, "VmRSS"),
        "hwm_kb": status_kb(args.pid, "VmHWM"),
        "cpu_s": own,
        "children_cpu_s": kids,
        "threads": threads(args.pid),
        "fds": fds(args.pid),
        "mem_available_kb": meminfo()["MemAvailable"],
    }


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def cmd_outcome(args):
    """Task outcomes (and, with --timing, submit → started → first output → finished) read
    from the store (SQLite, read-only)."""
    c = sqlite3.connect("file:%s?mode=ro" % args.db, uri=True, timeout=30)
    where, params = "agent = ?", [args.agent]
    ids = None
    if args.ids:
        with open(args.ids) as f:
            ids = [l.strip() for l in f if l.strip()]
    rows = c.execute("SELECT id, status, attempt, error, created_at, started_at, finished_at FROM tasks WHERE " + where, params).fetchall()
    if ids is not None:
        keep = set(ids)
        rows = [r for r in rows if r[0] in keep]
    by_status = {}
    errors = {}
    for r in rows:
        by_status[r[1]] = by_status.get(r[1], 0) + 1
        if r[3]:
            try:
                e = json.loads(r[3])
                key = "%s: %s" % (e.get("code"), str(e.get("message"))[:300])
            except ValueError:
                key = r[3][:300]
            errors[key] = errors.get(key, 0) + 1
    out = {"tasks": len(rows), "by_status": by_status, "attempts_max": max((r[2] for r in rows), default=0)}
    if errors:
        out["errors"] = sorted(errors.items(), key=lambda kv: -kv[1])[:8]
    if args.timing and rows:
        first_out = {}
        started = {}
        for task_id, kind, at in c.execute(
            "SELECT task_id, kind, min(at) FROM events WHERE agent = ? AND kind IN ('task.started', 'output') GROUP BY task_id, kind",
            [args.agent],
        ):
            (first_out if kind == "output" else started)[task_id] = at
        ms = lambda us: us / 1000.0
        to_start, to_out, start_to_out, total = [], [], [], []
        for task_id, status, _, _, created, st, fin in rows:
            if task_id in started:
                to_start.append(ms(started[task_id] - created))
            if task_id in first_out:
                to_out.append(ms(first_out[task_id] - created))
                if task_id in started:
                    start_to_out.append(ms(first_out[task_id] - started[task_id]))
            if fin:
                total.append(ms(fin - created))
        created = [r[4] for r in rows]
        finished = [r[6] for r in rows if r[6]]
        span = (max(finished) - min(created)) / 1e6 if finished else None

        def summary(v):
            return {"n": len(v), "p50_ms": round(pct(v, 50), 1), "p95_ms": round(pct(v, 95), 1), "max_ms": round(max(v), 1)} if v else None

        out["submit_to_started"] = summary(to_start)
        out["submit_to_first_output"] = summary(to_out)
        out["started_to_first_output"] = summary(start_to_out)
        out["submit_to_finished"] = summary(total)
        out["first_submit_to_last_finish_s"] = round(span, 3) if span else None
        out["tasks_per_s"] = round(len(finished) / span, 2) if span else None
    c.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit")
    s.add_argument("--server", required=True)
    s.add_argument("--agent", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--conns", type=int, default=32)
    s.add_argument("--input", default="Say hello.")
    s.add_argument("--max-attempts", type=int, default=1)
    s.add_argument("--ids")
    w = sub.add_parser("wait")
    w.add_argument("--server", required=True)
    w.add_argument("--agent", required=True)
    w.add_argument("--running", type=int)
    w.add_argument("--idle", action="store_true")
    w.add_argument("--pid", type=int)
    w.add_argument("--exe")
    w.add_argument("--mock")
    w.add_argument("--streams", type=int, help="also wait for the mock to hold this many streams")
    w.add_argument("--timeout", type=float, default=600)
    w.add_argument("--every", type=float, default=0.25)
    w.add_argument("--log-every", type=float, default=5)
    st = sub.add_parser("steady")
    st.add_argument("--pid", type=int, required=True)
    st.add_argument("--db")
    st.add_argument("--seconds", type=float, default=10)
    st.add_argument("--every", type=float, default=0.5)
    st.add_argument("--server")
    st.add_argument("--agent")
    st.add_argument("--exe")
    st.add_argument("--mock")
    pr = sub.add_parser("procs")
    pr.add_argument("--exe", required=True)
    po = sub.add_parser("proc")
    po.add_argument("--pid", type=int, required=True)
    o = sub.add_parser("outcome")
    o.add_argument("--db", required=True)
    o.add_argument("--agent", required=True)
    o.add_argument("--ids")
    o.add_argument("--timing", action="store_true")
    args = p.parse_args()
    out = {"submit": cmd_submit, "wait": cmd_wait, "steady": cmd_steady, "procs": cmd_procs, "proc": cmd_proc, "outcome": cmd_outcome}[args.cmd](args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
