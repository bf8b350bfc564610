#!/usr/bin/env bash
# A/B throughput of two builds in one sitting: bench/ab.sh BASE [HEAD]
#
# Builds BASE (any git revision) in its own worktree and target directory, and HEAD (default:
# the checked-out tree, uncommitted changes included) in the repo's own target directory, both
# `--release -p smith`. Then alternates fresh-server runs of the two builds — B A B A … so
# neither always goes first — with ONE client (HEAD's `smith bench`), and prints every run,
# the medians and HEAD/BASE's ratio.
#
#   embedded:    `smith up` on a fresh data dir; bench --tasks $TASKS --concurrency $CONC
#   distributed: when SMITH_TEST_POSTGRES_URL and SMITH_TEST_NATS_URL are set (or DIST=1 with
#                them), one supervisor, one worker and one gateway as separate processes on a
#                fresh database and bus namespace; bench --tasks $DIST_TASKS --concurrency $DIST_CONC
#
# Besides throughput it prints the servers' CPU time per task (user + system of every server
# process over the bench, in µs): on a shared, noisy VM that cost is steadier than tasks/s, and
# it is what a change on the hot path adds or saves.
#
# Knobs (environment): RUNS (3 per build), TASKS (30000), CONC (64), LATENCY_SECONDS (3),
# DIST (auto|0|1), DIST_TASKS (20000), DIST_CONC (256), AB_DIR (/tmp/smith-ab: worktrees,
# target dirs, logs); A_BIN / B_BIN: binaries already built from BASE / HEAD (skips building
# that side). Record the CPU model printed first with every figure (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

base=${1:?usage: bench/ab.sh BASE [HEAD]}
head=${2:-}
RUNS=${RUNS:-3}
TASKS=${TASKS:-30000}
CONC=${CONC:-64}
LATENCY_SECONDS=${LATENCY_SECONDS:-3}
DIST_TASKS=${DIST_TASKS:-20000}
DIST_CONC=${DIST_CONC:-256}
AB_DIR=${AB_DIR:-/tmp/smith-ab}
mkdir -p "$AB_DIR"

# Builds a revision in its own worktree and target dir; prints the binary's path.
build_rev() {
  local rev sha src target
  rev=$1
  sha=$(git rev-parse --verify "$rev^{commit}")
  src=$AB_DIR/src-$sha
  target=$AB_DIR/target-$sha
  if [ ! -d "$src" ]; then
    git worktree add --detach "$src" "$sha" >&2
  fi
  (cd "$src" && cargo build --release -p smith --target-dir "$target" >&2)
  echo "$target/release/smith"
}

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
a_bin=${A_BIN:-$(build_rev "$base")}
a_name="base $(git rev-parse --short "$base")"
if [ -n "${B_BIN:-}" ]; then
  b_bin=$B_BIN
  b_name="head ${head:-$(git rev-parse --short HEAD)}"
elif [ -n "$head" ]; then
  b_bin=$(build_rev "$head")
  b_name="head $(git rev-parse --short "$head")"
else
  cargo build --release -p smith >&2
  b_bin=$root/target/release/smith
  b_name="head $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty)"
fi
client=$b_bin
echo "A = $a_name ($a_bin)"
echo "B = $b_name ($b_bin)"

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

port=$((18300 + RANDOM % 500))

embedded() {
  local bin=$1 dir url
  dir=$(mktemp -d "$AB_DIR/up.XXXXXX")
  port=$((port + 1))
  url=http://127.0.0.1:$port
  "$bin" up --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  pids+=($!)
  wait_http "$url"
  measured "$url" "$TASKS" "$CONC"
  stop_all
  rm -rf "$dir"
}

distributed() {
  local bin=$1 dir url db store bus
  dir=$(mktemp -d "$AB_DIR/dist.XXXXXX")
  db=ab_$(basename "$dir" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
  psql "$SMITH_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
  store=$(sed -E "s#/[^/?]*(\\?|$)#/$db\\1#" <<<"${SMITH_TEST_POSTGRES_URL%/}")
  bus="${SMITH_TEST_NATS_URL}?namespace=$db"
  port=$((port + 1))
  url=http://127.0.0.1:$port
  export SMITH_STORE=$store SMITH_BUS=$bus
  "$bin" migrate >"$dir/migrate.log" 2>&1
  "$bin" supervisor --metrics-listen off >"$dir/sup.log" 2>&1 &
  pids+=($!)
  "$bin" worker --data-dir "$dir/w" --metrics-listen off >"$dir/worker.log" 2>&1 &
  pids+=($!)
  "$bin" gateway --listen "127.0.0.1:$port" >"$dir/gw.log" 2>&1 &
  pids+=($!)
  wait_http "$url"
  measured "$url" "$DIST_TASKS" "$DIST_CONC"
  stop_all
  unset SMITH_STORE SMITH_BUS
  psql "$SMITH_TEST_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
  rm -rf "$dir"
}

# Alternates the builds; prints each run and the summary of one mode.
compare() {
  local mode=$1 i a_tps=() b_tps=() a_p99=() b_p99=() a_cpu=() b_cpu=() r tps p99 cpu
  echo
  echo "== $mode: $RUNS runs per build, alternating =="
  for i in $(seq 1 "$RUNS"); do
    for which in B A; do
      # B first on odd runs, A first on even ones
      if [ $((i % 2)) -eq 0 ]; then which=$([ "$which" = B ] && echo A || echo B); fi
      if [ "$which" = A ]; then
        r=$($mode "$a_bin")
        read -r tps p99 cpu <<<"$r"
        a_tps+=("$tps") a_p99+=("$p99") a_cpu+=("$cpu")
      else
        r=$($mode "$b_bin")
        read -r tps p99 cpu <<<"$r"
        b_tps+=("$tps") b_p99+=("$p99") b_cpu+=("$cpu")
      fi
      printf '%-12s run %d  %s  %8s tasks/s  dispatch p99 %s ms  server cpu %s us/task\n' "$mode" "$i" "$which" "$tps" "$p99" "$cpu"
    done
  done
  local am bm ap bp ac bc
  am=$(printf '%s\n' "${a_tps[@]}" | median)
  bm=$(printf '%s\n' "${b_tps[@]}" | median)
  ap=$(printf '%s\n' "${a_p99[@]}" | median)
  bp=$(printf '%s\n' "${b_p99[@]}" | median)
  ac=$(printf '%s\n' "${a_cpu[@]}" | median)
  bc=$(printf '%s\n' "${b_cpu[@]}" | median)
  echo "$mode A ($a_name): runs ${a_tps[*]} tasks/s; median $am; dispatch p99 median $ap ms; server cpu ${a_cpu[*]} us/task, median $ac"
  echo "$mode B ($b_name): runs ${b_tps[*]} tasks/s; median $bm; dispatch p99 median $bp ms; server cpu ${b_cpu[*]} us/task, median $bc"
  awk -v a="$am" -v b="$bm" -v m="$mode" 'BEGIN { if (a > 0) printf "%s ratio B/A: %.3f\n", m, b / a }'
  awk -v a="$ac" -v b="$bc" -v m="$mode" 'BEGIN { if (a > 0) printf "%s server cpu per task B/A: %.3f\n", m, b / a }'
}

compare embedded
dist=${DIST:-auto}
if [ "$dist" = auto ]; then
  if [ -n "${SMITH_TEST_POSTGRES_URL:-}" ] && [ -n "${SMITH_TEST_NATS_URL:-}" ]; then dist=1; else dist=0; fi
fi
if [ "$dist" = 1 ]; then
  compare distributed
else
  echo
  echo "distributed: skipped (set SMITH_TEST_POSTGRES_URL and SMITH_TEST_NATS_URL)"
fi
