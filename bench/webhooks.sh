#!/usr/bin/env bash
# Webhook delivery throughput and latency (BENCHMARKS.md, "Webhooks"): a fresh server, then
# `smith bench --scenario webhooks` (a receiver in the bench process subscribed to every event,
# echo tasks paced to add RATE events/s to the feed for SECONDS).
# Usage: bench/webhooks.sh up|pg RATE SECONDS [more bench args]
#   up: smith up (SQLite, fsync on); pg: smith supervisor + worker + gateway on the local
#   PostgreSQL (a fresh database `webhooks`) and NATS.
# Needs a release build (cargo build --release -p smith).
set -euo pipefail
shape=$1 rate=$2 seconds=$3
shift 3
smith=${SMITH_BIN:-$(dirname "$0")/../target/release/smith}
dir=$(mktemp -d /tmp/smith-webhooks-bench.XXXXXX)
printf '[webhooks]\nallow_private = true\n' >"$dir/smith.toml"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
port=7200
if [ "$shape" = up ]; then
  RUST_LOG=warn "$smith" up --listen 127.0.0.1:$port --data-dir "$dir/data" --config "$dir/smith.toml" \
    >"$dir/up.log" 2>&1 &
  pids+=($!)
else
  pg=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
  psql -q "$pg" -c "DROP DATABASE IF EXISTS webhooks" -c "CREATE DATABASE webhooks"
  store="${pg%/*}/webhooks" bus=${NATS_URL:-nats://127.0.0.1:4222}
  common=(--store "$store" --bus "$bus" --config "$dir/smith.toml")
  RUST_LOG=warn "$smith" supervisor "${common[@]}" --metrics-listen 127.0.0.1:7201 >"$dir/sup.log" 2>&1 &
  pids+=($!)
  RUST_LOG=warn "$smith" worker "${common[@]}" --metrics-listen 127.0.0.1:7202 --data-dir "$dir/w" >"$dir/worker.log" 2>&1 &
  pids+=($!)
  RUST_LOG=warn "$smith" gateway "${common[@]}" --listen 127.0.0.1:$port >"$dir/gw.log" 2>&1 &
  pids+=($!)
fi
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
"$smith" bench --server http://127.0.0.1:$port --scenario webhooks --rate "$rate" --seconds "$seconds" \
  --concurrency 32 --out "/tmp/webhooks-$shape-$rate.json" "$@"
