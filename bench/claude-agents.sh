#!/usr/bin/env bash
# Claude Code CLI agents (executor "claude-code") in one `smith up` process, against the mock
# Anthropic API in bench/mock_llm.py. The prompt sets the mock's stream for each task
# ("mock:deltas=N,interval=S").
#
#   bench/claude-agents.sh memory [RUNS]          # (a) one agent alone: peak RSS/PSS of the CLI
#   bench/claude-agents.sh cpu [TASKS]            # (a) CPU per one-turn agent (reaped children's CPU)
#   bench/claude-agents.sh rate [TASKS] [CONC...] # (b) agents started per second, submit → first output
#   bench/claude-agents.sh scale [LEVEL...]       # (c) concurrent agents on a long streamed turn
#
# Environment: SMITH (default target/release/smith), CLAUDE (the CLI binary; default the one
# .ci/run installs), OUT (/tmp/smith-claude-bench), PORT (18400), MOCK_PORT (9901),
# LONG (deltas of the long turn in `scale`, default 120, one per second), RESERVE_MB (3072:
# `scale` stops before a level whose projected MemAvailable would fall below this).
set -euo pipefail
cd "$(dirname "$0")/.."
SMITH=${SMITH:-target/release/smith}
CLAUDE=${CLAUDE:-$PWD/.ci/tools/claude-2.1.332/node_modules/@anthropic-ai/claude-code-linux-x64/claude}
OUT=${OUT:-/tmp/smith-claude-bench}
PORT=${PORT:-18400}
MOCK_PORT=${MOCK_PORT:-9901}
LONG=${LONG:-120}
RESERVE_MB=${RESERVE_MB:-3072}
BENCH="python3 bench/agents_bench.py"
SERVER=http://127.0.0.1:$PORT
MOCK=http://127.0.0.1:$MOCK_PORT
mode=${1:?usage: $0 memory|cpu|rate|scale [args]}; shift

SMITH_PID= MOCK_PID=
stop() {
  [ -n "$SMITH_PID" ] && kill "$SMITH_PID" 2>/dev/null && wait "$SMITH_PID" 2>/dev/null || true
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null || true
  SMITH_PID= MOCK_PID=
}
trap stop EXIT
j() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# start RUN_DIR: a fresh store, mock and `smith up` with agents cc1, cc4, cc8, cc16 and
# cclong (concurrency 1000), all running $CLAUDE.
start() {
  run=$1
  rm -rf "$run"; mkdir -p "$run/data" "$run/home"
  python3 bench/mock_llm.py --port "$MOCK_PORT" --deltas 3 --interval 0.1 2>"$run/mock.log" &
  MOCK_PID=$!
  : >"$run/smith.toml"
  for a in cc1:1 cc4:4 cc8:8 cc16:16 cclong:1000; do
    cat >>"$run/smith.toml" <<EOF
[agents.${a%%:*}]
executor = "claude-code"
command = "$CLAUDE"
model = "claude-sonnet-4-5"
concurrency = ${a##*:}
max_attempts = 1
stall_timeout = "300s"
[agents.${a%%:*}.env]
ANTHROPIC_BASE_URL = "$MOCK"
ANTHROPIC_API_KEY = "test"
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1"
DISABLE_AUTOUPDATER = "1"
HOME = "$run/home"

EOF
  done
  "$SMITH" up --listen 127.0.0.1:$PORT --data-dir "$run/data" --config "$run/smith.toml" >"$run/smith.log" 2>&1 &
  SMITH_PID=$!
  for _ in $(seq 100); do curl -sf "$SERVER/healthz" >/dev/null && curl -sf "$MOCK/stats" >/dev/null && break; sleep 0.2; done
  sleep 2
}

mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GB, $("$CLAUDE" --version)"
case $mode in
memory)
  # One agent at a time, a 20 s turn (20 deltas, 1 s apart); the CLI process sampled every
  # 0.25 s: its largest RSS, PSS and VmHWM.
  runs=${1:-3}
  start "$OUT/memory"
  for i in $(seq "$runs"); do
    $BENCH submit --server "$SERVER" --agent cc1 --count 1 --conns 1 --input "Say hello. mock:deltas=20,interval=1" >/dev/null
    $BENCH wait --server "$SERVER" --agent cc1 --running 1 --timeout 60 >/dev/null 2>&1
    sleep 8 # the CLI is up and streaming
    s=$($BENCH steady --pid "$SMITH_PID" --seconds 8 --every 0.25 --exe "$CLAUDE")
    echo "run $i: $s"
    $BENCH wait --server "$SERVER" --agent cc1 --idle --timeout 120 >/dev/null 2>&1
    echo "$s" | j '"RESULT one CLI alone: rss=%.0fMB pss=%.0fMB hwm=%.0fMB" % (d["procs_rss_kb_max"]/1024, d["procs_pss_kb_max"]/1024, d["proc_max_hwm_kb"]/1024)'
  done
  echo "outcome: $($BENCH outcome --db "$OUT/memory/data/smith.db" --agent cc1 --timing)"
  ;;
cpu)
  # TASKS one-turn tasks (3 deltas 0.1 s apart) at concurrency 4: CPU of the reaped CLI
  # processes (smith's cutime+cstime) and of smith itself, per task.
  tasks=${1:-20}
  start "$OUT/cpu"
  before=$($BENCH proc --pid "$SMITH_PID")
  t0=$(date +%s.%N)
  $BENCH submit --server "$SERVER" --agent cc4 --count "$tasks" --conns 4 --input "Say hello. mock:deltas=3,interval=0.1" >/dev/null
  $BENCH wait --server "$SERVER" --agent cc4 --idle --timeout 600 >/dev/null 2>&1
  t1=$(date +%s.%N)
  after=$($BENCH proc --pid "$SMITH_PID")
  oc=$($BENCH outcome --db "$OUT/cpu/data/smith.db" --agent cc4 --timing)
  echo "outcome: $oc"
  python3 - "$tasks" "$before" "$after" "$t0" "$t1" <<'EOF'
import json, sys
n = int(sys.argv[1]); b, a = json.loads(sys.argv[2]), json.loads(sys.argv[3]); wall = float(sys.argv[5]) - float(sys.argv[4])
kids, own = a["children_cpu_s"] - b["children_cpu_s"], a["cpu_s"] - b["cpu_s"]
machine = a["machine_busy_s"] - b["machine_busy_s"]
print("RESULT %d one-turn tasks in %.1f s: CLI CPU %.2f s per task, smith %.3f s per task (%.1f%% of 2 cores; the machine %.1f%% busy)" % (
    n, wall, kids / n, own / n, 100 * (kids + own) / wall / 2, 100 * machine / wall / 2))
EOF
  ;;
rate)
  # TASKS one-turn tasks per concurrency level, each submitted at once; tasks/s from the
  # first submit to the last finish, and submit → first `output` (the CLI's init line).
  tasks=${1:-40}; shift || true
  [ $# -gt 0 ] || set -- 8 16
  for c in "$@"; do
    start "$OUT/rate-c$c"
    before=$($BENCH proc --pid "$SMITH_PID")
    $BENCH submit --server "$SERVER" --agent "cc$c" --count "$tasks" --conns 8 --input "Say hello. mock:deltas=3,interval=0.1" >/dev/null
    $BENCH wait --server "$SERVER" --agent "cc$c" --idle --timeout 900 >/dev/null 2>&1
    after=$($BENCH proc --pid "$SMITH_PID")
    oc=$($BENCH outcome --db "$OUT/rate-c$c/data/smith.db" --agent "cc$c" --timing)
    echo "concurrency $c: $oc"
    python3 - "$c" "$oc" "$before" "$after" <<'EOF'
import json, sys
c = sys.argv[1]; d, b, a = (json.loads(x) for x in sys.argv[2:5])
wall = a["machine_total_s"] - b["machine_total_s"]  # both cores' jiffies: 2 s per second
kids = a["children_cpu_s"] - b["children_cpu_s"]; own = a["cpu_s"] - b["cpu_s"]
print("RESULT concurrency %s: %d tasks %s, %.2f tasks/s, submit->first output p50 %.0f ms p95 %.0f ms, started->first output p50 %.0f ms p95 %.0f ms, "
      "submit->finished p50 %.0f ms; CLI CPU %.2f s/task; smith+CLI %.0f%% of the machine, the machine %.0f%% busy" % (
    c, d["tasks"], d["by_status"], d["tasks_per_s"], d["submit_to_first_output"]["p50_ms"], d["submit_to_first_output"]["p95_ms"],
    d["started_to_first_output"]["p50_ms"], d["started_to_first_output"]["p95_ms"], d["submit_to_finished"]["p50_ms"],
    kids / d["tasks"], 100 * (kids + own) / wall, 100 * (a["machine_busy_s"] - b["machine_busy_s"]) / wall))
EOF
    stop
  done
  ;;
scale)
  # LEVEL agents at once on a long turn ($LONG deltas, 1 s apart): wait until all run and the
  # mock holds LEVEL streams, sample 20 s (the CLI processes' total RSS and PSS, MemAvailable,
  # CPU), wait for all to finish and check every one succeeded. Stops at the first level with
  # a failure, or before a level that would bring MemAvailable under RESERVE_MB.
  [ $# -gt 0 ] || set -- 25 50 100 150 200
  start "$OUT/scale"
  prev=0 per_kb=0
  for level in "$@"; do
    avail=$($BENCH procs --exe "$CLAUDE" | j 'd["mem_available_kb"]')
    if [ "$per_kb" -gt 0 ] && [ $(( (avail - level * per_kb) / 1024 )) -lt "$RESERVE_MB" ]; then
      echo "RESULT stop before $level: MemAvailable $((avail / 1024)) MB, ~$((per_kb / 1024)) MB PSS per agent would leave under $RESERVE_MB MB"
      break
    fi
    ids=$OUT/scale/ids-$level
    cpu0=$($BENCH proc --pid "$SMITH_PID")
    sub=$($BENCH submit --server "$SERVER" --agent cclong --count "$level" --conns 8 --input "Say hello. mock:deltas=$LONG,interval=1" --ids "$ids")
    echo "level $level submit: $sub"
    up=$($BENCH wait --server "$SERVER" --agent cclong --running "$level" --mock "$MOCK" --streams "$level" --exe "$CLAUDE" \
          --timeout "$LONG" --log-every 10 2>>"$OUT/scale/wait.log") || true
    echo "level $level up: $up"
    st=$($BENCH steady --pid "$SMITH_PID" --seconds 20 --every 1 --server "$SERVER" --agent cclong --mock "$MOCK" --exe "$CLAUDE")
    echo "level $level steady: $st"
    $BENCH wait --server "$SERVER" --agent cclong --idle --exe "$CLAUDE" --timeout 1200 --log-every 15 2>>"$OUT/scale/wait.log" >/dev/null || true
    cpu1=$($BENCH proc --pid "$SMITH_PID")
    oc=$($BENCH outcome --db "$OUT/scale/data/smith.db" --agent cclong --ids "$ids" --timing)
    echo "level $level outcome: $oc"
    python3 - "$level" "$up" "$st" "$oc" "$cpu0" "$cpu1" <<'EOF'
import json, sys
level = int(sys.argv[1]); up, st, oc, c0, c1 = (json.loads(a) for a in sys.argv[2:7])
ok = oc["by_status"].get("succeeded", 0)
print("RESULT level %d: all up after %.0f s (%s), streams %s..%s, CLI total RSS %.1f GB PSS %.1f GB (%.0f MB PSS each), "
      "MemAvailable min %.1f GB, machine CPU %.0f%%, smith CPU %.1f%%, load %.1f; %d/%d succeeded; submit->finished p50 %.0f s max %.0f s; CLI CPU %.1f s/agent" % (
    level, up["seconds"], "timeout" if up.get("timeout") else "ok", st.get("mock_streams_min"), st.get("mock_streams_max"),
    st["procs_rss_kb_median"] / 2**20, st["procs_pss_kb_median"] / 2**20, st["procs_pss_kb_median"] / 1024 / max(1, st["procs_max"]),
    st["mem_available_min_kb"] / 2**20, st["cpu_machine_pct"], st["cpu_smith_pct"], st["loadavg1"], ok, oc["tasks"],
    oc["submit_to_finished"]["p50_ms"] / 1000, oc["submit_to_finished"]["max_ms"] / 1000,
    (c1["children_cpu_s"] - c0["children_cpu_s"]) / level))
EOF
    ok=$(echo "$oc" | j 'd["by_status"].get("succeeded", 0)')
    per_kb=$(echo "$st" | j 'int(d["procs_pss_kb_median"] / max(1, d["procs_max"]))')
    if [ "$ok" -ne "$level" ]; then echo "RESULT stop: level $level had failures"; break; fi
  done
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
