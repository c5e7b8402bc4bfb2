#!/usr/bin/env bash
# `./orderflow bench` with the system confined to some CPUs: the broker, PostgreSQL and every
# `orderflow serve` process run on SYSTEM_CPUS, the load generator on LOAD_CPUS. It checks the
# scaling model of docs/performance.md: what the system sustains on one core and on two.
#
#   scripts/bench-pinned.sh SYSTEM_CPUS LOAD_CPUS [bench flags...]
#   scripts/bench-pinned.sh 0 1 --rate 60 --seconds 30 --max-rates 70,80,90,100,110
#   scripts/bench-pinned.sh 0-1 0-1 --rate 100 --seconds 30 --no-max
#
# It stops the system, pins the machine's running PostgreSQL (every process; the backends it
# forks later inherit it), starts the system under `taskset` (its processes inherit the
# affinity), runs the bench there without `up`, then stops the system and gives PostgreSQL
# back the CPUs it had. Setting PostgreSQL's affinity needs root or the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
system_cpus=$1
load_cpus=$2
shift 2

postmaster=$(pgrep -o -x postgres || true)
if [ -z "$postmaster" ]; then
  echo "bench-pinned: no running PostgreSQL (postgres process) to pin" >&2
  exit 1
fi
pg_cpus_before=$(taskset -pc "$postmaster" | sed 's/.*: //')

pin_postgres() {
  for pid in $(pgrep -x postgres); do
    taskset -apc "$1" "$pid" >/dev/null
  done
}

restore() {
  ./orderflow down >&2 || true
  pin_postgres "$pg_cpus_before"
  echo "bench-pinned: PostgreSQL back on CPUs $pg_cpus_before" >&2
}
trap restore EXIT

# The wrapper builds before it runs anything: build (and stop the system) unpinned.
./orderflow down >&2
pin_postgres "$system_cpus"
echo "bench-pinned: the system on CPUs $system_cpus, the load generator on $load_cpus" >&2
taskset -c "$system_cpus" ./orderflow up >&2
taskset -c "$load_cpus" ./orderflow bench --no-up "$@"
