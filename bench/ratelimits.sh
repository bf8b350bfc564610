#!/usr/bin/env bash
# The cost of the fleet's rate limiter on the claim and request path (docs/rate-limits.md):
# end-to-end tasks/s of an `anthropic` agent against the mock API (bench/mock_llm.py, one
# short text delta per answer) on one `smith up`, without a rate limit and with one that never
# binds (10^9 requests and tokens a minute: every request still takes its share from the
# store's bucket and settles its tokens), alternated in the same sitting.
#
#   bench/ratelimits.sh               # 3 rounds of each, 3000 tasks, concurrency 64
#   ROUNDS=5 TASKS=5000 bench/ratelimits.sh
#
# Environment: SMITH (binary, default target/release/smith), TASKS, CONCURRENCY, ROUNDS, OUT
# (/tmp/smith-ratelimit-bench), PORT (18310), MOCK_PORT (9910).
set -euo pipefail
cd "$(dirname "$0")/.."
SMITH=${SMITH:-target/release/smith}
TASKS=${TASKS:-3000}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/smith-ratelimit-bench}
PORT=${PORT:-18310}
MOCK_PORT=${MOCK_PORT:-9910}
SERVER=http://127.0.0.1:$PORT
MOCK=http://127.0.0.1:$MOCK_PORT

SMITH_PID= MOCK_PID=
stop() {
  [ -n "$SMITH_PID" ] && kill "$SMITH_PID" 2>/dev/null && wait "$SMITH_PID" 2>/dev/null || true
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null || true
  SMITH_PID= MOCK_PID=
}
trap stop EXIT

mkdir -p "$OUT"
python3 bench/mock_llm.py --port "$MOCK_PORT" --deltas 1 --interval 0 2>"$OUT/mock.log" &
MOCK_PID=$!
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $SMITH; tasks=$TASKS concurrency=$CONCURRENCY"
for round in $(seq "$ROUNDS"); do
  for mode in none unbound; do
    run=$OUT/$mode-$round
    rm -rf "$run"; mkdir -p "$run/data"
    limit=
    if [ "$mode" = unbound ]; then
      limit='rate_limit = { requests_per_minute = 1000000000, tokens_per_minute = 1000000000 }'
    fi
    cat >"$run/smith.toml" <<TOML
[agents.llm]
executor = "anthropic"
model = "claude-sonnet-4-5"
base_url = "$MOCK"
api_key = "test"
concurrency = 1000
max_attempts = 1
collaborate = false
$limit
TOML
    "$SMITH" up --listen 127.0.0.1:$PORT --data-dir "$run/data" --config "$run/smith.toml" >"$run/smith.log" 2>&1 &
    SMITH_PID=$!
    for _ in $(seq 100); do curl -sf "$SERVER/healthz" >/dev/null && break; sleep 0.2; done
    result=$("$SMITH" bench --server "$SERVER" --scenario tasks --agent llm --tasks "$TASKS" --concurrency "$CONCURRENCY" --latency-seconds 5 2>&1 | tail -n 20)
    echo "$mode round $round: $(echo "$result" | grep -iE 'tasks/s|throughput|p50|p99' | tr '\n' ' ')"
    echo "$result" >"$run/bench.txt"
    kill "$SMITH_PID"; wait "$SMITH_PID" 2>/dev/null || true; SMITH_PID=
  done
done
