#!/usr/bin/env bash
# Server CPU per operation for the table workloads of the tables issue, over the wire:
# single-document insert (hard durability), batched insert (1000 documents per query),
# point get, and a full-table filter+count scan over KEYS documents.
# Starts a one-core rdb pinned to CPU 0, drives it from CPU 1 with rdb-bench, and prints
# the median of RUNS runs. Usage: benches/tables.sh [RUNS] [SECONDS] [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-5}
KEYS=${3:-1000000}
. benches/start_rdb.sh

# The table and its KEYS documents (the load itself is the batched-insert measurement's
# warm-up; its own figure is printed too).
load=$(bench --setup --workload load --keys "$KEYS" --batch 1000 --connections 2 --pipeline 2)
# Reads are measured once the flushes and compactions the load left behind are done.
wait_idle

summarize() { # name, then JSON lines on stdin
  python3 -c '
import json, statistics, sys
name = sys.argv[1]
rs = [json.loads(l) for l in sys.stdin if l.strip()]
med = lambda f: statistics.median(f(r) for r in rs)
print("%-22s %12.0f %12.0f %10.0f %12.3f %14.3f" % (name, med(lambda r: r["ops_per_sec"]),
      med(lambda r: r["docs_per_sec"]), med(lambda r: r["latency_us"]["p99"]),
      med(lambda r: r["server_cpu_us_per_op"]), med(lambda r: r["server_cpu_us_per_doc"])))' "$1"
}
printf "%-22s %12s %12s %10s %12s %14s\n" workload "ops/s" "docs/s" "p99 us" "cpu us/op" "cpu us/doc"
echo "$load" | summarize "load (batch 1000)"
run() { # name, rdb-bench args...
  local name=$1; shift
  for _ in $(seq "$RUNS"); do bench --keys "$KEYS" --duration "$SECS" "$@"; done | summarize "$name"
}
# Reads first, while the table holds exactly KEYS documents (a scan's per-document
# figure divides by KEYS); inserts add documents under fresh keys afterwards.
# Gets are measured in steady state: the first pass over the table fills the block cache.
run "get" --workload get --connections 4 --pipeline 16 --warmup 5
run "scan filter+count" --workload scan --connections 1 --pipeline 1
run "insert (hard, 1 doc)" --workload insert --connections 8 --pipeline 16
run "insert (hard, 1000)" --workload insert --batch 1000 --connections 2 --pipeline 2
