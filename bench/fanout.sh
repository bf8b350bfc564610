#!/usr/bin/env bash
# One `smith bench --scenario fanout` run against a fresh gateway and database (BENCHMARKS.md,
# "SSE fan-out"). Usage: bench/fanout.sh CLIENTS SECONDS [more bench args, e.g. --rate 2]
# Needs the local PostgreSQL and NATS, and a release build (cargo build --release -p smith).
set -euo pipefail
n=$1 seconds=$2
shift 2
smith=${SMITH_BIN:-$(dirname "$0")/../target/release/smith}
pg=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
psql -q "$pg" -c "DROP DATABASE IF EXISTS fanout" -c "CREATE DATABASE fanout"
RUST_LOG=warn "$smith" gateway --store "${pg%/*}/fanout" \
  --bus "nats://127.0.0.1:4222?capacity=${CAPACITY:-1048576}" --listen 127.0.0.1:7100 >/tmp/fanout-gateway.log 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:7100/healthz >/dev/null && break; sleep 0.1; done
"$smith" bench --server http://127.0.0.1:7100 --scenario fanout --bus nats://127.0.0.1:4222 \
  --clients "$n" --seconds "$seconds" --concurrency 64 --out "/tmp/fanout-$n.json" "$@"
