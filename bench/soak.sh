#!/usr/bin/env bash
# Memory soak of one `smith up`: bench/soak.sh [BURSTS] [TASKS_PER_BURST]
#
# Starts one `smith up` (release build, fresh data dir, nobody scraping /metrics), then runs
# BURSTS bursts of TASKS_PER_BURST `echo` tasks with `smith bench` (each burst waits until its
# tasks are done), idles IDLE seconds, and prints after each burst the tasks so far, the
# process's RSS and anonymous memory (/proc/PID/status: VmRSS, RssAnon), and the data
# directory's size (the database and its WAL). Flat anonymous memory after the warm-up is the
# goal (issue 16: within 10 % over the next 1,000,000 tasks after 200,000).
#
# Knobs (environment): SMITH (binary; default target/release/smith, built if missing),
# CONC (64), IDLE (2), PORT (18700), DATA (a temporary dir).
set -euo pipefail
cd "$(dirname "$0")/.."

bursts=${1:-20}
per=${2:-50000}
CONC=${CONC:-64}
IDLE=${IDLE:-2}
PORT=${PORT:-18700}
SMITH=${SMITH:-target/release/smith}
if [ ! -x "$SMITH" ]; then cargo build --release -p smith >&2; fi
data=${DATA:-$(mktemp -d /tmp/smith-soak.XXXXXX)}
url=http://127.0.0.1:$PORT

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  binary: $SMITH ($(git rev-parse --short HEAD))"
"$SMITH" up --listen "127.0.0.1:$PORT" --data-dir "$data/d" >"$data/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
printf '%6s %10s %10s %10s %10s %10s %9s\n' burst tasks rss_mb anon_mb db_mb wal_mb tasks/s
done_tasks=0
for b in $(seq 1 "$bursts"); do
  out=$("$SMITH" --server "$url" bench --tasks "$per" --concurrency "$CONC" --latency-seconds 0 2>&1) || { echo "$out" >&2; exit 1; }
  tps=$(sed -n 's/.* = \([0-9.]*\) tasks\/s.*/\1/p' <<<"$out" | head -n1)
  done_tasks=$((done_tasks + per))
  sleep "$IDLE"
  db=$(stat -c %s "$data"/d/smith.db 2>/dev/null | awk '{s+=$1} END {print s+0}')
  wal=$(stat -c %s "$data"/d/smith.db-wal 2>/dev/null | awk '{s+=$1} END {print s+0}')
  printf '%6d %10d %10.1f %10.1f %10.1f %10.1f %9s\n' "$b" "$done_tasks" \
    "$(echo "$(status VmRSS) / 1024" | bc -l)" "$(echo "$(status RssAnon) / 1024" | bc -l)" \
    "$(echo "$db / 1048576" | bc -l)" "$(echo "$wal / 1048576" | bc -l)" "${tps:-?}"
done
