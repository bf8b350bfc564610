#!/usr/bin/env bash
# The autoscaled agent pool of `smith up`, with the built-in `sleep` agent.
#
#   bench/scaling.sh burst 1000 10000     # 0 → N running agents, RUNS times each (median)
#   bench/scaling.sh memory 10000 100000  # bytes per idle and per running sleep agent
#
# burst N: a fresh data dir and `smith up --min-agents 0 --max-agents N`; `smith bench
#   --scenario burst` submits N sleep tasks over CONNS connections and follows the feed until
#   the N-th `task.started`: the time from the first submission to N running agents, and how
#   long after the last submission was acknowledged that came.
# memory N:
#   idle    — `smith up --min-agents 0` idle RSS, then `--min-agents N` (the pool holds N idle
#             slots; waits for smith_agent_slots{state="idle"} = N): (RSS_N − RSS_0) / N.
#   running — `smith up --min-agents 0 --max-agents N`, RSS at idle, then N sleep tasks (long
#             enough that all run at once); once smith_agent_slots{state="busy"} = N and RSS has
#             settled: (RSS_running − RSS_idle) / N. This is the whole process: slot, attempt,
#             lease, the claimed task in memory, the store's cache of N more rows.
#
# Environment: SMITH (default target/release/smith), RUNS (3), CONNS (64), OUT
# (/tmp/smith-scaling-bench), PORT (18400), FSYNC (true).
set -euo pipefail
cd "$(dirname "$0")/.."
SMITH=${SMITH:-target/release/smith}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
OUT=${OUT:-/tmp/smith-scaling-bench}
PORT=${PORT:-18400}
FSYNC=${FSYNC:-true}
SERVER=http://127.0.0.1:$PORT
mode=${1:-burst}
shift || true
[ $# -gt 0 ] || set -- 1000 10000

SMITH_PID=
stop() {
  [ -n "$SMITH_PID" ] && kill "$SMITH_PID" 2>/dev/null && wait "$SMITH_PID" 2>/dev/null || true
  SMITH_PID=
}
trap stop EXIT

# start DIR N MIN: a fresh `smith up` holding MIN..N slots; sleep's concurrency N.
start() {
  local dir=$1 n=$2 min=$3
  rm -rf "$dir"; mkdir -p "$dir/data"
  printf '[agents.sleep]\nconcurrency = %s\n[store]\nfsync = %s\n' "$n" "$FSYNC" >"$dir/smith.toml"
  "$SMITH" up --listen "127.0.0.1:$PORT" --data-dir "$dir/data" --config "$dir/smith.toml" \
    --min-agents "$min" --max-agents "$n" >"$dir/smith.log" 2>&1 &
  SMITH_PID=$!
  for _ in $(seq 100); do curl -sf "$SERVER/healthz" >/dev/null && return; sleep 0.1; done
  echo "smith did not start: $(tail -5 "$dir/smith.log")" >&2; exit 1
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$SMITH_PID/status"; }
metric() { curl -sf "$SERVER/metrics" | awk -v s="$1" '$1 == s {print $2}'; }
# wait_metric SERIES VALUE: until the sample equals VALUE (at most 10 minutes)
wait_metric() {
  for _ in $(seq 6000); do
    [ "$(metric "$1")" = "$2" ] && return
    sleep 0.1
  done
  echo "timed out waiting for $1 = $2 (now $(metric "$1"))" >&2; exit 1
}
# settled_rss: RSS once two readings a second apart agree within 1 %
settled_rss() {
  local a b
  a=$(rss_kb)
  for _ in $(seq 60); do
    sleep 1; b=$(rss_kb)
    [ $(( (a > b ? a - b : b - a) * 100 )) -le "$a" ] && break
    a=$b
  done
  echo "$b"
}

mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GB; fsync=$FSYNC; $($SMITH --version 2>/dev/null || true)"
case $mode in
burst)
  for N in "$@"; do
    for r in $(seq "$RUNS"); do
      run=$OUT/burst-$N-$r
      start "$run" "$N" 0
      sleep 1
      # long enough that the first ones are still running when the last one starts
      "$SMITH" --server "$SERVER" bench --scenario burst --tasks "$N" --concurrency "$CONNS" \
        --sleep-ms $(( 15000 + N )) --out "$run/burst.json" | sed "s/^/N=$N run $r: /"
      stop
    done
    python3 - "$OUT" "$N" "$RUNS" <<'EOF'
import json, statistics, sys
out, n, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
docs = [json.load(open(f"{out}/burst-{n}-{r}/burst.json")) for r in range(1, runs + 1)]
med = lambda k: statistics.median(d[k] for d in docs)
print(f"N={n}: median of {runs}: submitted in {med('submit_seconds'):.3f} s, all running "
      f"{med('to_running_seconds'):.3f} s after the first submission, "
      f"{med('after_last_ack_seconds'):.3f} s after the last acknowledgement "
      "(runs: " + ", ".join("%.3f" % d["to_running_seconds"] for d in docs) + ")")
EOF
  done
  ;;
memory)
  for N in "$@"; do
    run=$OUT/idle-$N
    start "$run.0" "$N" 0
    sleep 3
    base=$(settled_rss); stop
    start "$run" "$N" "$N"
    wait_metric 'smith_agent_slots{state="idle"}' "$N"
    idle=$(settled_rss); stop
    echo "N=$N idle slots: RSS ${base} kB with none → ${idle} kB with $N: $(( (idle - base) * 1024 / N )) B per idle agent"

    run=$OUT/running-$N
    start "$run" "$N" 0
    sleep 3
    base=$(settled_rss)
    t0=$(date +%s.%N)
    "$SMITH" --server "$SERVER" bench --scenario burst --tasks "$N" --concurrency "$CONNS" \
      --sleep-ms $(( 30000 + N * 2 )) --out "$run/burst.json" | sed "s/^/N=$N: /"
    wait_metric 'smith_agent_slots{state="busy"}' "$N"
    running=$(settled_rss)
    busy=$(metric 'smith_agent_slots{state="busy"}')
    cpu=$(awk '{print ($14+$15)/100}' "/proc/$SMITH_PID/stat")
    echo "N=$N running: RSS ${base} kB idle → ${running} kB with $busy running: $(( (running - base) * 1024 / N )) B per running agent; smith CPU so far ${cpu} s"
    # every one of them finishes
    wait_metric 'smith_agent_slots{state="busy"}' 0
    ok=$(metric 'smith_task_attempts_finished_total{agent="sleep",outcome="succeeded"}')
    echo "N=$N: $ok succeeded, $(( $(date +%s) - ${t0%.*} )) s after the burst began"
    stop
  done
  ;;
*)
  echo "usage: bench/scaling.sh burst N... | memory N..." >&2; exit 2 ;;
esac
