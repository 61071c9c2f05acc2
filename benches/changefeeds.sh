#!/usr/bin/env bash
# Changefeed costs over the wire (issue 7): the time from a write being sent to each
# feed receiving its change, p50/p99, with 1, 100 and 1000 feeds at 1000 and 10000
# writes/s (soft durability, so the time is the server's, not fdatasync's), server memory
# per feed, and the writer's throughput at full speed with 1000 feeds against none.
# Starts a one-core rdb pinned to CPU 0, drives it from CPU 1 with rdb-bench.
# Usage: benches/changefeeds.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
. benches/start_rdb.sh
bench --setup --table feeds --workload expr --duration 0.1 --warmup 0 >/dev/null

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
    bench --table feeds --workload changefeed --feeds "$feeds" --connections 4 --rate "$rate" \
      --durability soft --duration "$SECS" --warmup 1 | row "$feeds feeds, $rate w/s"
  done
done
for feeds in 0 1000; do
  bench --table feeds --workload changefeed --feeds "$feeds" --connections 4 --rate 1000000 \
    --pipeline 64 --durability soft --duration "$SECS" --warmup 1 | tee "$dir/max$feeds.json" \
    | row "$feeds feeds, writer at full speed"
done
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
w = {n: json.load(open(f"{d}/max{n}.json"))["writes_per_sec"] for n in (0, 1000)}
print("writer throughput with 1000 feeds: %.0f%% of the throughput without (target >= 90%%)" % (100 * w[1000] / w[0]))
PY
