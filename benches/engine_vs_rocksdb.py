#!/usr/bin/env python3
"""The storage engine against RocksDB's db_bench, same workloads, same run, same core.

Runs db_bench's fillseq, fillrandom, overwrite, readrandom and seekrandom (16-byte keys,
100-byte values, zstd) with sync off, then the write workloads with sync on and 1, 8
and 32 writers, against `rdb-bench engine` and RocksDB's `db_bench` (Debian package
rocksdb-tools; installed if missing). Both are pinned to the same CPU: the engine is
one shard per core, so this compares per-core throughput. Prints ops/s for both, the
ratio, and the engine's write amplification from its own counters.

Usage: benches/engine_vs_rocksdb.py [--num N] [--sync-num N] [--cpu C] [--runs R] [--configs all|off|on]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "rdb-bench")


def ensure_db_bench():
    if shutil.which("db_bench"):
        return
    subprocess.run(["apt-get", "install", "-y", "-q", "rocksdb-tools"], check=True,
                   stdout=subprocess.DEVNULL)


def rocks(cpu, workdir, bench, num, threads, sync, fresh):
    db = os.path.join(workdir, "rocksdb")
    if fresh:
        shutil.rmtree(db, ignore_errors=True)
    cmd = ["taskset", "-c", str(cpu), "db_bench", "--benchmarks=" + bench, "--num=%d" % num,
           "--key_size=16", "--value_size=100", "--compression_type=zstd", "--db=" + db,
           "--threads=%d" % threads, "--sync=%d" % int(sync)]
    if not fresh:
        cmd.append("--use_existing_db=1")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"^%s\s*:.*?([\d.]+) ops/sec" % bench, out, re.M)
    if not m:
        sys.exit("could not parse db_bench output:\n" + out)
    return float(m.group(1))


def ours(cpu, workdir, benches, num, threads, sync):
    cmd = ["taskset", "-c", str(cpu), BENCH, "engine", "--dir", os.path.join(workdir, "rdb"),
           "--benchmarks", ",".join(benches), "--num", str(num), "--threads", str(threads), "--json"]
    if sync:
        cmd.append("--sync")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {r["benchmark"]: r for r in json.loads(out)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=1_000_000)
    ap.add_argument("--sync-num", type=int, default=5_000)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--configs", choices=["all", "off", "on"], default="all",
                    help="sync off (all five workloads), sync on (writes, 1/8/32 writers), or both")
    a = ap.parse_args()
    ensure_db_bench()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "rdb-bench"], cwd=ROOT, check=True)
    configs = []
    if a.configs in ("all", "off"):
        configs.append((False, 1, ["fillseq", "fillrandom", "overwrite", "readrandom", "seekrandom"], a.num))
    if a.configs in ("all", "on"):
        for t in (1, 8, 32):
            configs.append((True, t, ["fillseq", "fillrandom", "overwrite"], a.sync_num))
    print("%-11s %-5s %-7s %12s %12s %7s %9s" % ("workload", "sync", "writers", "rdb ops/s", "rocksdb ops/s", "ratio", "rdb w-amp"))
    with tempfile.TemporaryDirectory(prefix="rdb-vs-rocksdb-", dir=os.environ.get("BENCH_DIR")) as work:
        for sync, threads, benches, num in configs:
            runs_ours = [ours(a.cpu, work, benches, num, threads, sync) for _ in range(a.runs)]
            for b in benches:
                r_rocks = []
                for _ in range(a.runs):
                    if b == "overwrite" or b.startswith("read") or b.startswith("seek"):
                        # Needs the data fillrandom leaves behind.
                        rocks(a.cpu, work, "fillrandom", num, threads, sync, fresh=True)
                    r_rocks.append(rocks(a.cpu, work, b, num, threads, sync, fresh=b.startswith("fill")))
                mine = statistics.median(r[b]["ops_per_sec"] for r in runs_ours)
                theirs = statistics.median(r_rocks)
                wamp = statistics.median(r[b]["write_amplification"] for r in runs_ours)
                print("%-11s %-5s %-7d %12.0f %12.0f %6.2fx %9.2f" % (
                    b, "on" if sync else "off", threads, mine, theirs, mine / theirs, wamp), flush=True)


if __name__ == "__main__":
    main()
