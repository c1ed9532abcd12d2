#!/usr/bin/env bash
# Installs (Debian's package) and starts a local PostgreSQL server with a role and a database for the tuning tests,
# then prints the URL to reach it. Idempotent.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 30); do
    pg_isready -q -h 127.0.0.1 && break
    sleep 1
done
run_sql() { su postgres -c "psql -qtAc \"$1\""; }
[ "$(run_sql "SELECT 1 FROM pg_roles WHERE rolname = 'sb3pv'")" = "1" ] || run_sql "CREATE ROLE sb3pv LOGIN PASSWORD 'sb3pv'"
[ "$(run_sql "SELECT 1 FROM pg_database WHERE datname = 'sb3pv_tuning'")" = "1" ] || run_sql "CREATE DATABASE sb3pv_tuning OWNER sb3pv"
echo "postgresql://sb3pv:sb3pv@127.0.0.1:5432/sb3pv_tuning"
