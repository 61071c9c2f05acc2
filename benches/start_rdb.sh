# Sourced by the wire benchmarks: builds rdb and rdb-bench, starts a one-core rdb pinned
# to CPU 0 on a scratch directory and a free port, and stops it on exit.
# Sets: dir (scratch directory), port, pid (the server's). Defines `restart_rdb` (a new
# server on an empty directory), `wait_idle` (until background work is done), `bench` (rdb-bench on
# CPU 1 against that server, printing JSON) and `median_row WIDTH NAME` (one row of the
# medians of the rdb-bench JSON lines on stdin: ops/s, p50, p99, server CPU us/op).
# RDB_BIN runs another server binary (a build of an earlier commit, for a comparison).
cargo build --release -q --bin rdb -p rdb-server -p rdb-bench
rdb_bin=${RDB_BIN:-target/release/rdb}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_rdb() {
  # The port of a server just stopped can take a moment to free: try again then.
  for _ in $(seq 20); do
    taskset -c 0 "$rdb_bin" --directory "$dir/data" --driver-port "$port" --cores 1 >>"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
      kill -0 $pid 2>/dev/null || break
      sleep 0.05
    done
    sleep 0.5
  done
  echo "rdb did not start; its log:" >&2; cat "$dir/log" >&2; return 1
}
# A new server on an empty data directory (for runs that must not inherit earlier ones'
# data or background work).
restart_rdb() {
  # A server that has not stopped 10 s after SIGTERM is killed: a run must not hang here.
  kill $pid
  for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  rm -rf "$dir/data"
  start_rdb
}
start_rdb
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
# Waits (up to 120 s) until the server uses under 5% of a core over a second: a load
# leaves flushes and compactions behind, and a read measured over them is mostly theirs.
wait_idle() {
  local t0 t1
  for _ in $(seq 120); do
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 1
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    [ $((t1 - t0)) -lt 5 ] && return 0
  done
  echo "server still busy after 120 s" >&2
}
bench() { taskset -c 1 target/release/rdb-bench --port "$port" --server-pid "$pid" --json "$@"; }
median_row() {
  python3 -c '
import json, statistics, sys
width, name = int(sys.argv[1]), sys.argv[2]
rs = [json.loads(l) for l in sys.stdin if l.strip()]
med = lambda f: statistics.median(f(r) for r in rs)
print("%-*s %10.0f %9.0f %9.0f %11.2f" % (width, name, med(lambda r: r["ops_per_sec"]),
      med(lambda r: r["latency_us"]["p50"]), med(lambda r: r["latency_us"]["p99"]),
      med(lambda r: r["server_cpu_us_per_op"])))' "$1" "$2"
}
