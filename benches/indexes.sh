#!/usr/bin/env bash
# Secondary index costs over the wire (issue 6): server CPU per single-document insert
# (hard durability) into tables with 0, 1 and 5 secondary indexes, as ratios to the
# table without indexes, then get_all by index and order_by(index).limit(100) on the
# 5-index table. Every table holds KEYS documents with the same five integer fields.
# Starts a one-core rdb pinned to CPU 0, drives it from CPU 1 with rdb-bench, and prints
# medians of RUNS runs. Usage: benches/indexes.sh [RUNS] [SECONDS] [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-5}
KEYS=${3:-1000000}
. benches/start_rdb.sh

for n in 0 1 5; do
  bench --setup --table "idx$n" --indexes "$n" --fields 5 --workload load --keys "$KEYS" \
    --batch 1000 --connections 2 --pipeline 2 >"$dir/load$n.json"
done

summarize() { median_row 34 "$1"; } # name, then JSON lines on stdin
printf "%-34s %10s %9s %9s %11s\n" workload "ops/s" "p50 us" "p99 us" "cpu us/op"
for n in 0 1 5; do
  summarize "load, $n indexes (per 1000 docs)" <"$dir/load$n.json"
done
run() { # name, rdb-bench args...
  local name=$1; shift
  for _ in $(seq "$RUNS"); do bench --keys "$KEYS" --fields 5 --duration "$SECS" "$@"; done | summarize "$name"
}
run "get_all by index (5-index table)" --table idx5 --workload get-all --connections 4 --pipeline 16 --warmup 5
run "order_by(index).limit(100)" --table idx5 --workload order-limit --connections 1 --pipeline 1
run "order_by(index).limit(100), 4x8" --table idx5 --workload order-limit --connections 4 --pipeline 8
for n in 0 1 5; do
  run "insert (hard, 1 doc), $n indexes" --table "idx$n" --workload insert --connections 8 --pipeline 16 \
    | tee "$dir/insert$n.txt"
done
python3 - "$dir" <<'PY'
import sys
d = sys.argv[1]
cpu = {n: float(open(f"{d}/insert{n}.txt").read().split()[-1]) for n in (0, 1, 5)}
print("insert CPU ratio: 1 index %.2fx, 5 indexes %.2fx the insert without indexes (target <= 2x for 5)"
      % (cpu[1] / cpu[0], cpu[5] / cpu[0]))
PY
