#!/usr/bin/env python3
"""Git workspace cost (docs/workspaces.md): how long a task's checkout takes to make, as a
`worktree` and as a `clone`, on a repository of FILES files; and N concurrent worktree tasks on
one repository.

    python3 bench/workspaces.py [--smith target/release/smith] [--files 10000] [--tasks 20] [--concurrent 50]

Starts its own `smith up` on a temp dir. A checkout's time is its task's `workspace.ready`
event minus its `task.started` event (both stamped by the worker); the removal after the task is
not in it. The agent (`process`, `true`) changes nothing, so no commit is made.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)


def make_repo(path, files):
    os.makedirs(path)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        d = os.path.join(path, f"d{i % 100:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n" * 20)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "files")


def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def events(base, task_id):
    with urllib.request.urlopen(f"{base}/v1/tasks/{task_id}/events?after=0", timeout=300) as r:
        out, kind = [], None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                out.append(json.loads(line[5:]))
                if kind in ("task.succeeded", "task.failed", "task.cancelled", "task.timed_out"):
                    return out
    return out


def at(e):
    return datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()


def checkout_seconds(base, task_id):
    evs = events(base, task_id)
    kinds = {e["kind"]: e for e in evs}
    assert "task.succeeded" in kinds, evs[-1]
    return at(kinds["workspace.ready"]) - at(kinds["task.started"])


def run(base, agent, n, concurrency):
    def one(_):
        t = call(base, "POST", "/v1/tasks", {"agent": agent, "input": ""})
        return checkout_seconds(base, t["id"])
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        times = list(pool.map(one, range(n)))
    return times, time.monotonic() - start


def summary(times):
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return f"median {statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smith", default="target/release/smith")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--port", type=int, default=18470)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="smith-ws-bench-")
    repo = os.path.join(tmp, "repo")
    t0 = time.monotonic()
    make_repo(repo, a.files)
    print(f"repository: {a.files} files, made in {time.monotonic() - t0:.1f} s")
    config = os.path.join(tmp, "smith.toml")
    with open(config, "w") as f:
        for name, mode in (("wt", "worktree"), ("cl", "clone")):
            f.write(f'[agents.{name}]\nexecutor = "process"\ncommand = "true"\nconcurrency = {a.concurrent}\n'
                    f'workspace = {{ repo = "{repo}", base = "main", mode = "{mode}" }}\n\n')
    base = f"http://127.0.0.1:{a.port}"
    smith = subprocess.Popen([os.path.abspath(a.smith), "up", "--listen", f"127.0.0.1:{a.port}", "--data-dir",
                              os.path.join(tmp, "data"), "--config", config, "--max-agents", str(a.concurrent)],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "smith.log"), "w"))
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        for agent, mode in (("wt", "worktree"), ("cl", "clone")):
            times, _ = run(base, agent, a.tasks, 1)
            print(f"{mode:8}  one at a time, {a.tasks} tasks: {summary(times)}")
        times, wall = run(base, "wt", a.concurrent, a.concurrent)
        print(f"worktree  {a.concurrent} at once: {summary(times)}; all {a.concurrent} done in {wall:.1f} s")
        left = os.listdir(os.path.join(tmp, "data", "work", "tasks"))
        wts = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout.count("\n")
        print(f"left behind: {len(left)} checkouts, {wts - 1} worktrees")
    finally:
        smith.terminate()
        smith.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
