# Sourced by the wire benchmarks: builds rdb and rdb-bench, starts a one-core rdb pinned
# to CPU 0 on a scratch directory and a free port, and stops it on exit.
# Sets: dir (scratch directory), port, pid (the server's).
cargo build --release -q --bin rdb -p rdb-server -p rdb-bench
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 target/release/rdb --directory "$dir/data" --driver-port "$port" --cores 1 >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
