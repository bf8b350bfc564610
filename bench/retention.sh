#!/usr/bin/env bash
# Retention's cost on the task path, A/B in one sitting (docs/retention.md): bench/retention.sh
#
# Alternates fresh `smith up` servers (A B A B …) — A without `[retention]`, B with finished
# tasks and audit records kept $AGE (default 5s), looked at every second — and runs the same
# client against each: a warm-up of $WARM `echo` tasks, a pause of $AGE so they are all past
# their age, then the measured `smith bench --scenario tasks` ($TASKS tasks at full speed by
# $CONC submitters, then $PACED_SECONDS s paced at 1,000 tasks/s). On B the leader deletes the
# warm-up's tasks and then the run's own while it runs: retention at full speed beside the task
# path. Every 2 s it samples the store's size (smith.db plus its WAL) and prints the series.
#
#   SMITH=target/release/smith RUNS=2 TASKS=60000 bench/retention.sh
#
# Knobs: SMITH (target/release/smith), RUNS (2 per side), WARM (30000), TASKS (60000), CONC
# (64), PACED_SECONDS (30), AGE (5s), OUT (/tmp/smith-retention-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
SMITH=${SMITH:-target/release/smith}
RUNS=${RUNS:-2}
WARM=${WARM:-30000}
TASKS=${TASKS:-60000}
CONC=${CONC:-64}
PACED_SECONDS=${PACED_SECONDS:-30}
AGE=${AGE:-5s}
OUT=${OUT:-/tmp/smith-retention-bench}
rm -rf "$OUT" && mkdir -p "$OUT"
grep -m1 'model name' /proc/cpuinfo || true
nproc
date -u

run() {
  local side=$1 n=$2 dir="$OUT/$1-$2"
  mkdir -p "$dir/data"
  if [ "$side" = B ]; then
    printf '[retention]\ntasks = "%s"\naudit = "%s"\ninterval = "1s"\nbatch_size = 500\n' "$AGE" "$AGE" > "$dir/smith.toml"
  else
    : > "$dir/smith.toml"
  fi
  "$SMITH" up --config "$dir/smith.toml" --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/stdout" 2>"$dir/stderr" &
  local pid=$!
  local url=""
  for _ in $(seq 100); do
    url=$(grep -o 'http://[0-9.:]*' "$dir/stdout" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "smith up did not start"; cat "$dir/stderr"; exit 1; }
  ( while kill -0 "$pid" 2>/dev/null; do
      db=$(stat -c %s "$dir/data/smith.db" 2>/dev/null || echo 0)
      wal=$(stat -c %s "$dir/data/smith.db-wal" 2>/dev/null || echo 0)
      echo "$(date +%s) $db $wal"
      sleep 2
    done ) > "$dir/sizes" &
  local sampler=$!
  "$SMITH" --server "$url" bench --scenario tasks --tasks "$WARM" --concurrency "$CONC" --latency-seconds 1 >"$dir/warm" 2>&1
  sleep "${AGE%s}"
  "$SMITH" --server "$url" bench --scenario tasks --tasks "$TASKS" --concurrency "$CONC" \
    --latency-rate 1000 --latency-seconds "$PACED_SECONDS" | tee "$dir/bench"
  sleep 4
  local deleted
  deleted=$(curl -s "$url/metrics" | grep '^smith_retention_deleted_total{kind="tasks"}' | awk '{print $2}' || true)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$sampler" 2>/dev/null || true
  echo "$side run $n: tasks deleted ${deleted:-0}; store bytes (db, wal) every 2 s:"
  awk '{printf "%d+%d ", $2, $3} END {print ""}' "$dir/sizes"
}

for n in $(seq "$RUNS"); do
  run A "$n"
  run B "$n"
done
echo "throughput (tasks/s) and paced dispatch latency, A = no retention, B = retention $AGE:"
for f in "$OUT"/*/bench; do
  echo "$(basename "$(dirname "$f")"): $(grep -o '= [0-9]* tasks/s' "$f" | head -1) | $(grep -i 'latency' "$f" | head -1)"
done
