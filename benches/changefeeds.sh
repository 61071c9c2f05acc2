#!/usr/bin/env bash
# Changefeed costs over the wire (issue 7): the time from a write being sent to each
# feed receiving its change, p50/p99, with 1, 100 and 1000 feeds at 1000 and 10000
# writes/s (soft durability, so the time is the server's, not fdatasync's), server memory
# per feed, and the writer's throughput at full speed with 1000 feeds against none
# (four pairs of runs, median of the ratios).
# Every run gets a new one-core rdb (empty data directory) pinned to CPU 0, driven from
# CPU 1 by rdb-bench.
# Usage: benches/changefeeds.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
. benches/start_rdb.sh

row() { # name, then a JSON line on stdin
  python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
lat, mem = r["change_latency_us"], r["server_rss_kib_per_feed"]
print("%-28s %10.0f %12.0f %9d %9d %10.1f %9s" % (sys.argv[1], r["writes_per_sec"],
      r["changes_per_sec"], lat["p50"], lat["p99"], r["server_cpu_us_per_write"] or 0,
      "%.1f" % mem if mem is not None else "-"))' "$1"
}
printf "%-28s %10s %12s %9s %9s %10s %9s\n" run "writes/s" "changes/s" "p50 us" "p99 us" "cpu us/w" "KiB/feed"
for feeds in 1 100 1000; do
  for rate in 1000 10000; do
    restart_rdb
    bench --setup --table feeds --workload expr --duration 0.1 --warmup 0 >/dev/null
    bench --table feeds --workload changefeed --feeds "$feeds" --connections 4 --rate "$rate" \
      --durability soft --duration "$SECS" --warmup 1 | row "$feeds feeds, $rate w/s"
  done
done
# The writer at full speed, without feeds and with 1000: four pairs, each run on a new
# server with an empty table (a table grown by earlier runs makes the writer slower), in
# ABBA order; ratio per pair, median of the ratios.
for run in 1 2 3 4; do
  order="0 1000"; [ $((run % 2)) -eq 0 ] && order="1000 0"
  for feeds in $order; do
    restart_rdb
    bench --setup --table feeds --workload expr --duration 0.1 --warmup 0 >/dev/null
    bench --table feeds --workload changefeed --feeds "$feeds" --connections 4 --rate 1000000 \
      --pipeline 64 --durability soft --duration "$SECS" --warmup 1 | tee "$dir/max$feeds.$run.json" \
      | row "$feeds feeds, writer at full speed"
  done
done
python3 - "$dir" <<'PY'
import json, statistics, sys
d = sys.argv[1]
runs = range(1, 5)
w = {n: [json.load(open(f"{d}/max{n}.{r}.json"))["writes_per_sec"] for r in runs] for n in (0, 1000)}
ratios = [a / b for a, b in zip(w[1000], w[0])]
print("writer throughput with 1000 feeds: median %.0f%% of the throughput without (pairs: %s; target >= 90%%)"
      % (100 * statistics.median(ratios), ", ".join("%.0f%%" % (100 * r) for r in ratios)))
PY
