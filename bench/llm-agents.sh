#!/usr/bin/env bash
# Concurrent streaming HTTP LLM agents (executor "anthropic") in one `smith up` process,
# against the mock Anthropic API in bench/mock_llm.py.
#
#   bench/llm-agents.sh                 # N = 1000 5000 10000
#   bench/llm-agents.sh 10000 15000     # other sizes
#
# For each N: a fresh data dir, mock and `smith up`; smith's RSS at idle; N tasks submitted
# over CONNS keep-alive connections; wait until the agent's `running` count and the mock's
# open streams both reach N; then STEADY seconds of sampling (smith's RSS, its CPU from
# /proc/PID/stat, events written per second from the store); then wait for every task to
# finish and count outcomes. Memory per streaming agent = (RSS while all N stream − RSS idle) / N.
#
# Environment: SMITH (binary, default target/release/smith), DELTAS (default 60) and
# INTERVAL (default 1 s) shape each stream, COLLABORATE (default true: each run opens an MCP
# session to smith's own /mcp first, as LLM agents do by default), CONNS (64), STEADY (10 s),
# OUT (/tmp/smith-llm-bench), PORT (18300), MOCK_PORT (9900).
set -euo pipefail
cd "$(dirname "$0")/.."
SMITH=${SMITH:-target/release/smith}
DELTAS=${DELTAS:-60}
INTERVAL=${INTERVAL:-1}
COLLABORATE=${COLLABORATE:-true}
CONNS=${CONNS:-64}
STEADY=${STEADY:-10}
OUT=${OUT:-/tmp/smith-llm-bench}
PORT=${PORT:-18300}
MOCK_PORT=${MOCK_PORT:-9900}
BENCH="python3 bench/agents_bench.py"
SERVER=http://127.0.0.1:$PORT
MOCK=http://127.0.0.1:$MOCK_PORT
[ $# -gt 0 ] || set -- 1000 5000 10000

SMITH_PID= MOCK_PID=
stop() {
  [ -n "$SMITH_PID" ] && kill "$SMITH_PID" 2>/dev/null && wait "$SMITH_PID" 2>/dev/null || true
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null || true
  SMITH_PID= MOCK_PID=
}
trap stop EXIT
j() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GB; deltas=$DELTAS interval=${INTERVAL}s collaborate=$COLLABORATE"
for N in "$@"; do
  run=$OUT/n$N
  rm -rf "$run"; mkdir -p "$run/data"
  python3 bench/mock_llm.py --port "$MOCK_PORT" --deltas "$DELTAS" --interval "$INTERVAL" 2>"$run/mock.log" &
  MOCK_PID=$!
  cat >"$run/smith.toml" <<EOF
[agents.llm]
executor = "anthropic"
model = "claude-sonnet-4-5"
base_url = "$MOCK"
api_key = "test"
concurrency = 20000
max_attempts = 1
stall_timeout = "120s"
collaborate = $COLLABORATE
EOF
  "$SMITH" up --listen 127.0.0.1:$PORT --data-dir "$run/data" --config "$run/smith.toml" >"$run/smith.log" 2>&1 &
  SMITH_PID=$!
  for _ in $(seq 100); do curl -sf "$SERVER/healthz" >/dev/null && curl -sf "$MOCK/stats" >/dev/null && break; sleep 0.2; done
  sleep 5
  idle=$($BENCH proc --pid $SMITH_PID)
  echo "N=$N idle: $idle"
  sub=$($BENCH submit --server "$SERVER" --agent llm --count "$N" --conns "$CONNS" --input "Say hello." --ids "$run/ids")
  echo "N=$N submit: $sub"
  up=$($BENCH wait --server "$SERVER" --agent llm --running "$N" --mock "$MOCK" --streams "$N" --pid $SMITH_PID \
        --timeout "$(python3 -c "print($DELTAS*$INTERVAL)")" 2>"$run/wait.log") || true
  echo "N=$N all running after: $up"
  sleep 2
  mock0=$($BENCH proc --pid $MOCK_PID)
  steady=$($BENCH steady --pid $SMITH_PID --db "$run/data/smith.db" --seconds "$STEADY" --server "$SERVER" --agent llm --mock "$MOCK")
  mock1=$($BENCH proc --pid $MOCK_PID)
  echo "N=$N steady: $steady"
  done_=$($BENCH wait --server "$SERVER" --agent llm --idle --pid $SMITH_PID --timeout 900 2>>"$run/wait.log") || true
  echo "N=$N drained: $done_"
  outcome=$($BENCH outcome --db "$run/data/smith.db" --agent llm --ids "$run/ids" --timing)
  echo "N=$N outcome: $outcome"
  echo "N=$N mock: $(curl -s "$MOCK/stats")"
  stop
  rss_idle=$(echo "$idle" | j 'd["rss_kb"]')
  rss_run=$(echo "$steady" | j 'd["rss_median_kb"]')
  python3 - "$N" "$rss_idle" "$rss_run" "$steady" "$outcome" "$mock0" "$mock1" <<'EOF'
import json, sys
n, idle, run = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
st, oc, m0, m1 = (json.loads(a) for a in sys.argv[4:8])
mock_cpu = 100 * (m1["cpu_s"] - m0["cpu_s"]) / max(1e-9, st["seconds"])
print("RESULT N=%d idle_rss=%.1fMB running_rss=%.1fMB per_agent=%.1fKB streams=%s..%s running=%s..%s smith_cpu=%.1f%% events/s=%.0f "
      "mock_cpu~%.0f%% machine_cpu=%.1f%% outcome=%s" % (
    n, idle / 1024, run / 1024, (run - idle) / n, st.get("mock_streams_min"), st.get("mock_streams_max"),
    st.get("running_min"), st.get("running_max"), st["cpu_smith_pct"], st["events_per_s"], mock_cpu,
    st["cpu_machine_pct"], json.dumps(oc["by_status"])))
EOF
done
