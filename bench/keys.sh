#!/usr/bin/env bash
# Keyed concurrency's cost in one sitting: bench/keys.sh [SMITH_BINARY]
#
# The same load twice on one build, alternating on fresh servers: `echo` tasks without keys
# (agent `echo`), and the same tasks over $KEYS concurrency keys (agent `keyed`: the `echo`
# built-in with `max_per_key = $MAX_PER_KEY`, each task's key `k<i mod KEYS>` given with it).
# Prints every run, the medians and keyed/unkeyed, with the servers' CPU time per task.
#
#   embedded:    `smith up` on a fresh data dir; bench --tasks $TASKS --concurrency $CONC
#   distributed: when SMITH_TEST_POSTGRES_URL and SMITH_TEST_NATS_URL are set (or DIST=1 with
#                them), one supervisor, one worker and one gateway as separate processes on a
#                fresh database and bus namespace; bench --tasks $DIST_TASKS --concurrency $DIST_CONC
#
# Knobs (environment): RUNS (3 per load), KEYS (1000), MAX_PER_KEY (1), TASKS (30000),
# CONC (64), LATENCY_SECONDS (3), DIST (auto|0|1), DIST_TASKS (20000), DIST_CONC (256),
# KEYS_DIR (/tmp/smith-keys). Default binary: target/release/smith (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/smith}
RUNS=${RUNS:-3}
KEYS=${KEYS:-1000}
MAX_PER_KEY=${MAX_PER_KEY:-1}
TASKS=${TASKS:-30000}
CONC=${CONC:-64}
LATENCY_SECONDS=${LATENCY_SECONDS:-3}
DIST_TASKS=${DIST_TASKS:-20000}
DIST_CONC=${DIST_CONC:-256}
KEYS_DIR=${KEYS_DIR:-/tmp/smith-keys}
mkdir -p "$KEYS_DIR"
if [ ! -x "$bin" ]; then
  cargo build --release -p smith >&2
fi
config=$KEYS_DIR/smith.toml
printf '[agents.keyed]\nexecutor = "builtin"\nbuiltin = "echo"\nmax_per_key = %s\n' "$MAX_PER_KEY" >"$config"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "binary: $bin; keyed: $KEYS keys, max_per_key = $MAX_PER_KEY"

client=$bin
# shellcheck source=bench/lib.sh
source bench/lib.sh

port=$((18800 + RANDOM % 500))

# The bench's arguments for one load ("plain" or "keyed").
load_args() {
  if [ "$1" = keyed ]; then echo "--agent keyed --keys $KEYS"; fi
}

embedded() {
  local load=$1 dir url
  dir=$(mktemp -d "$KEYS_DIR/up.XXXXXX")
  port=$((port + 1))
  url=http://127.0.0.1:$port
  "$bin" up --config "$config" --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  pids+=($!)
  wait_http "$url"
  # shellcheck disable=SC2046 # the load's arguments, split
  measured "$url" "$TASKS" "$CONC" $(load_args "$load")
  stop_all
  rm -rf "$dir"
}

distributed() {
  local load=$1 dir url db store bus
  dir=$(mktemp -d "$KEYS_DIR/dist.XXXXXX")
  db=keys_$(basename "$dir" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
  psql "$SMITH_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
  store=$(sed -E "s#/[^/?]*(\\?|$)#/$db\\1#" <<<"${SMITH_TEST_POSTGRES_URL%/}")
  bus="${SMITH_TEST_NATS_URL}?namespace=$db"
  port=$((port + 1))
  url=http://127.0.0.1:$port
  export SMITH_STORE=$store SMITH_BUS=$bus SMITH_CONFIG=$config
  "$bin" migrate >"$dir/migrate.log" 2>&1
  "$bin" supervisor --metrics-listen off >"$dir/sup.log" 2>&1 &
  pids+=($!)
  "$bin" worker --data-dir "$dir/w" --metrics-listen off >"$dir/worker.log" 2>&1 &
  pids+=($!)
  "$bin" gateway --listen "127.0.0.1:$port" >"$dir/gw.log" 2>&1 &
  pids+=($!)
  wait_http "$url"
  # shellcheck disable=SC2046 # the load's arguments, split
  measured "$url" "$DIST_TASKS" "$DIST_CONC" $(load_args "$load")
  stop_all
  unset SMITH_STORE SMITH_BUS SMITH_CONFIG
  psql "$SMITH_TEST_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
  rm -rf "$dir"
}

# Alternates the loads (keyed first on odd runs, plain first on even ones).
compare() {
  local mode=$1 i load r tps p99 cpu p_tps=() k_tps=() p_cpu=() k_cpu=() p_p99=() k_p99=()
  echo
  echo "== $mode: $RUNS runs per load, alternating =="
  for i in $(seq 1 "$RUNS"); do
    for load in keyed plain; do
      if [ $((i % 2)) -eq 0 ]; then load=$([ "$load" = keyed ] && echo plain || echo keyed); fi
      r=$($mode "$load")
      read -r tps p99 cpu <<<"$r"
      if [ "$load" = keyed ]; then
        k_tps+=("$tps") k_p99+=("$p99") k_cpu+=("$cpu")
      else
        p_tps+=("$tps") p_p99+=("$p99") p_cpu+=("$cpu")
      fi
      printf '%-12s run %d  %-5s  %8s tasks/s  dispatch p99 %s ms  server cpu %s us/task\n' "$mode" "$i" "$load" "$tps" "$p99" "$cpu"
    done
  done
  local pm km pp kp pc kc
  pm=$(printf '%s\n' "${p_tps[@]}" | median)
  km=$(printf '%s\n' "${k_tps[@]}" | median)
  pp=$(printf '%s\n' "${p_p99[@]}" | median)
  kp=$(printf '%s\n' "${k_p99[@]}" | median)
  pc=$(printf '%s\n' "${p_cpu[@]}" | median)
  kc=$(printf '%s\n' "${k_cpu[@]}" | median)
  echo "$mode plain: runs ${p_tps[*]} tasks/s; median $pm; dispatch p99 median $pp ms; server cpu median $pc us/task"
  echo "$mode keyed: runs ${k_tps[*]} tasks/s; median $km; dispatch p99 median $kp ms; server cpu median $kc us/task"
  awk -v a="$pm" -v b="$km" -v m="$mode" 'BEGIN { if (a > 0) printf "%s ratio keyed/plain: %.3f\n", m, b / a }'
  awk -v a="$pc" -v b="$kc" -v m="$mode" 'BEGIN { if (a > 0) printf "%s server cpu per task keyed/plain: %.3f\n", m, b / a }'
}

compare embedded
dist=${DIST:-auto}
if [ "$dist" = auto ]; then
  if [ -n "${SMITH_TEST_POSTGRES_URL:-}" ] && [ -n "${SMITH_TEST_NATS_URL:-}" ]; then dist=1; else dist=0; fi
fi
if [ "$dist" = 1 ]; then
  compare distributed
fi
