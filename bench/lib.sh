# shellcheck shell=bash
# Shared by the A/B scripts (bench/ab.sh, bench/keys.sh): sourced, not run. The caller sets
# `client` (the smith binary whose `bench` command drives the load) and LATENCY_SECONDS, and
# appends the pids of the servers it starts to `pids`.

pids=()
# Stops (and reaps) every server in `pids`.
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# Waits until the gateway at $1 answers /healthz (10 s at most).
wait_http() {
  for _ in $(seq 1 200); do
    if curl -fsS "$1/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# CPU ticks (user + system) used so far by the given processes.
ticks() {
  local p t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# Runs the bench client: bench_run URL TASKS CONC [EXTRA BENCH ARGS…]; prints "TPS P99 N", N
# every task it ran, the latency run's too.
bench_run() {
  local url=$1 tasks=$2 conc=$3 out
  shift 3
  # shellcheck disable=SC2154 # `client` is the caller's
  out=$("$client" --server "$url" bench --tasks "$tasks" --concurrency "$conc" --latency-seconds "$LATENCY_SECONDS" "$@" 2>&1) || {
    echo "$out" >&2
    echo "nan nan $tasks"
    return
  }
  local tps p99 paced
  tps=$(sed -n 's/.* = \([0-9.]*\) tasks\/s.*/\1/p' <<<"$out" | head -n1)
  p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n1)
  paced=$(sed -n 's/^dispatch latency at .* (\([0-9]*\) tasks).*/\1/p' <<<"$out" | head -n1)
  echo "${tps:-nan} ${p99:-nan} $((tasks + ${paced:-0}))"
}

# Runs the bench against the servers in `pids` (arguments as bench_run's); prints "TPS P99 CPU"
# (CPU: µs of their user + system time per task over the bench, the latency run's counted too).
measured() {
  local t0 tps p99 n
  t0=$(ticks "${pids[@]}")
  read -r tps p99 n < <(bench_run "$@")
  awk -v r="$tps $p99" -v t0="$t0" -v t1="$(ticks "${pids[@]}")" -v hz="$(getconf CLK_TCK)" -v n="$n" \
    'BEGIN { printf "%s %.1f\n", r, (t1 - t0) / hz * 1e6 / n }'
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
