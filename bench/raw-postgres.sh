#!/usr/bin/env bash
# Raw PostgreSQL claim-and-complete rates, the reference next to `smith bench` on PostgreSQL.
# Usage: bench/raw-postgres.sh [DATABASE_URL_OPTIONS...]  (defaults: -h 127.0.0.1 -U postgres smith_bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
db=${DB:-smith_bench}
psql_() { psql -h 127.0.0.1 -U postgres -d "$db" -q "$@"; }
setup() {
  psql_ -c "DROP TABLE IF EXISTS rawjobs" \
        -c "CREATE TABLE rawjobs (id bigserial primary key, status text not null, claimer int, payload text)" \
        -c "INSERT INTO rawjobs (status, payload) SELECT 'queued', 'x' FROM generate_series(1, $1)" \
        -c "CREATE INDEX rawjobs_q ON rawjobs (id) WHERE status = 'queued'" \
        -c "CREATE INDEX rawjobs_r ON rawjobs (claimer) WHERE status = 'running'" \
        -c "VACUUM ANALYZE rawjobs"
}
setup 100000
echo "single-row claim+complete (jobs/s = tps):"
pgbench -h 127.0.0.1 -U postgres -n -c 8 -j 2 -T 4 -f "$here/claim1.sql" "$db" | grep '^tps'
setup 1000000
echo "100-row claim+complete (jobs/s = 100 x tps):"
pgbench -h 127.0.0.1 -U postgres -n -c 8 -j 2 -T 4 -f "$here/claim100.sql" "$db" | grep '^tps'
psql_ -c "DROP TABLE rawjobs"
