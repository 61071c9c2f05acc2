#!/usr/bin/env bash
# Server CPU per trivial query (r.expr(1)) over the wire, with pipelined clients.
# Starts a one-core rdb pinned to CPU 0, drives it from CPU 1 with rdb-bench, and
# prints the median of RUNS runs for several pipeline depths.
# Usage: benches/wire_expr.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-5}
. benches/start_rdb.sh
printf "%-10s %-12s %-14s %-10s %-10s\n" pipeline connections "ops/s" "p99 us" "cpu us/op"
for depth in 1 4 32; do
  rows=()
  for _ in $(seq "$RUNS"); do
    rows+=("$(taskset -c 1 target/release/rdb-bench --port "$port" --workload expr \
      --connections 8 --pipeline "$depth" --duration "$SECS" --server-pid "$pid" --json)")
  done
  printf '%s\n' "${rows[@]}" | python3 -c '
import json, statistics, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
med = lambda k: statistics.median(r[k] for r in rs)
print("%-10d %-12d %-14.0f %-10.0f %-10.2f" % (rs[0]["pipeline"], rs[0]["connections"],
      med("ops_per_sec"), statistics.median(r["latency_us"]["p99"] for r in rs),
      med("server_cpu_us_per_op")))'
done
