#!/usr/bin/env bash
# Geospatial index reads over the wire (issue 8): get_nearest (10 nearest documents to a
# random point) and get_intersecting (documents in a random 50 km circle) on a table of
# KEYS documents with random points uniform over the sphere and a geospatial index.
# Latency on one connection without pipelining, then throughput and server CPU per query
# with 4 connections, next to a point `get` on the same table as the peer.
# Starts a one-core rdb pinned to CPU 0, drives it from CPU 1 with rdb-bench, and prints
# medians of RUNS runs. Usage: benches/geo.sh [RUNS] [SECONDS] [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-5}
KEYS=${3:-1000000}
. benches/start_rdb.sh

bench --setup --geo --table geo --workload load --keys "$KEYS" --batch 1000 \
  --connections 2 --pipeline 2 >"$dir/load.json"

summarize() { median_row 40 "$1"; } # name, then JSON lines on stdin
printf "%-40s %10s %9s %9s %11s\n" workload "ops/s" "p50 us" "p99 us" "cpu us/op"
summarize "load with geo index (per 1000 docs)" <"$dir/load.json"
run() { # name, rdb-bench args...
  local name=$1; shift
  for _ in $(seq "$RUNS"); do bench --table geo --geo --keys "$KEYS" --duration "$SECS" "$@"; done \
    | summarize "$name"
}
run "get (peer), 1x1" --workload get --connections 1 --pipeline 1
run "get_nearest(10), 1x1" --workload get-nearest --connections 1 --pipeline 1
run "get_intersecting(50 km circle), 1x1" --workload get-intersecting --connections 1 --pipeline 1
run "get (peer), 4x8" --workload get --connections 4 --pipeline 8 | tee "$dir/get.txt"
run "get_nearest(10), 4x8" --workload get-nearest --connections 4 --pipeline 8 | tee "$dir/near.txt"
run "get_intersecting(50 km circle), 4x8" --workload get-intersecting --connections 4 --pipeline 8 \
  | tee "$dir/inter.txt"
python3 - "$dir" <<'PY'
import sys
d = sys.argv[1]
cpu = {k: float(open(f"{d}/{k}.txt").read().split()[-1]) for k in ("get", "near", "inter")}
print("server CPU per query vs a point get: get_nearest %.1fx, get_intersecting %.1fx"
      % (cpu["near"] / cpu["get"], cpu["inter"] / cpu["get"]))
PY
