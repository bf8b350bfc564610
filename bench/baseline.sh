#!/usr/bin/env bash
# The baseline `smith plan --model measured` sizes from (bench/baseline-*.json): each executor
# measured by `smith bench --scenario baseline` against a fresh `smith up`, gathered in one
# file with --merge (BENCHMARKS.md, "Baseline for `smith plan --model measured`").
#
#   bench/baseline.sh OUT.json
#
# Four runs, each on a fresh store and server: `sleep` (200 in-process agents), `process-sleep`
# (200 `sleep 30` processes), idle SSE connections (1,000), and `claude-code`: CLAUDE_AGENTS
# real Claude Code CLIs (the binary .ci/run installs) against bench/mock_llm.py, each on a
# multi-turn task — TOOLS turns that stream TURN text deltas 1 s apart and end in a Bash tool
# call (`echo step N`, which the CLI runs), then a last turn of TURN deltas ending in text.
# The CLIs get STARTUP seconds to start before the HOLD-second window; while it runs this
# script also records the CLIs' PSS (shared pages split between them; the bench's figure is
# RSS, which counts them once per process) and how many streams the mock holds.
#
# Environment: SMITH (default target/release/smith), CLAUDE (the CLI), WORK
# (/tmp/smith-baseline), PORT (18500), MOCK_PORT (9902), CLAUDE_AGENTS (40), TOOLS (3),
# TURN (25), STARTUP (CLAUDE_AGENTS + 5), HOLD (20, the claude-code window; the others use
# the bench's default 10), ONLY (a space-separated subset of: sleep process-sleep sse claude-code).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT.json}
SMITH=${SMITH:-target/release/smith}
CLAUDE=${CLAUDE:-$PWD/.ci/tools/claude-2.1.332/node_modules/@anthropic-ai/claude-code-linux-x64/claude}
WORK=${WORK:-/tmp/smith-baseline}
PORT=${PORT:-18500}
MOCK_PORT=${MOCK_PORT:-9902}
CLAUDE_AGENTS=${CLAUDE_AGENTS:-40}
TOOLS=${TOOLS:-3}
TURN=${TURN:-25}
STARTUP=${STARTUP:-$((CLAUDE_AGENTS + 5))}
HOLD=${HOLD:-20}
ONLY=${ONLY:-sleep process-sleep sse claude-code}
SERVER=http://127.0.0.1:$PORT
MOCK=http://127.0.0.1:$MOCK_PORT

SMITH_PID= MOCK_PID=
stop() {
  if [ -n "$SMITH_PID" ]; then kill "$SMITH_PID" 2>/dev/null && wait "$SMITH_PID" 2>/dev/null || true; fi
  if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null || true; fi
  SMITH_PID= MOCK_PID=
}
trap stop EXIT

rm -rf "$WORK" && mkdir -p "$WORK/home"
cat >"$WORK/smith.toml" <<TOML
[agents.process-sleep]           # a process agent: \`sleep INPUT\` in its own process group
executor = "process"
command = "sleep"
input = "arg"
concurrency = 200

[agents.claude-code]             # the Claude Code CLI against the mock Anthropic API
executor = "claude-code"
command = "$CLAUDE"
model = "claude-sonnet-4-5"
concurrency = $CLAUDE_AGENTS
max_attempts = 1
stall_timeout = "300s"
allowed_tools = ["Bash(echo:*)"]  # the mock's tool calls: \`echo step N\`
[agents.claude-code.env]
ANTHROPIC_BASE_URL = "$MOCK"
ANTHROPIC_API_KEY = "test"
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1"
DISABLE_AUTOUPDATER = "1"
HOME = "$WORK/home"
TOML

up() {
  rm -rf "$WORK/data"
  "$SMITH" up --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --config "$WORK/smith.toml" >>"$WORK/smith.log" 2>&1 &
  SMITH_PID=$!
  for _ in $(seq 100); do curl -sf "$SERVER/healthz" >/dev/null && break; sleep 0.1; done
  sleep 3
}
bench() { "$SMITH" --server "$SERVER" bench --scenario baseline --merge --out "$OUT" "$@"; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GB, $("$CLAUDE" --version)"
rm -f "$OUT"
for m in $ONLY; do
  up
  case $m in
  sleep) bench --measure sleep --sse-connections 0 ;;
  process-sleep) bench --measure process-sleep=30 --sse-connections 0 ;;
  sse) bench --agents 0 ;;
  claude-code)
    python3 bench/mock_llm.py --port "$MOCK_PORT" 2>"$WORK/mock.log" &
    MOCK_PID=$!
    for _ in $(seq 50); do curl -sf "$MOCK/stats" >/dev/null && break; sleep 0.1; done
    # in the window: the bench's idle reading (10 s), the submissions, STARTUP, then HOLD
    (
      sleep $((10 + STARTUP + 5 + HOLD / 2))
      python3 bench/agents_bench.py procs --exe "$CLAUDE" >"$WORK/claude-procs.json"
      curl -s "$MOCK/stats" >"$WORK/mock-stats.json"
    ) &
    sampler=$!
    bench --measure "claude-code=\"work mock:deltas=$TURN,interval=1,tools=$TOOLS\"" --agents "$CLAUDE_AGENTS" \
      --startup-seconds "$STARTUP" --hold-seconds "$HOLD" --sse-connections 0
    wait "$sampler"
    python3 - "$WORK/claude-procs.json" "$WORK/mock-stats.json" "$CLAUDE_AGENTS" <<'EOF'
import json, sys
p, m, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
print("claude-code in the window: %d CLI processes, RSS %.1f MB and PSS %.1f MB each; the mock held %d streams (%d tool calls so far)" % (
    p["count"], p["rss_kb"] / 1024 / max(1, p["count"]), p["pss_kb"] / 1024 / max(1, p["count"]), m["active"], m["tool_uses"]))
EOF
    ;;
  *) echo "unknown measurement $m" >&2; exit 2 ;;
  esac
  stop
done
