#!/usr/bin/env python3
"""Runs the shared ReQL conformance suite against a fresh rdb and enforces the ratchet.

Usage: conformance.py RDB_BINARY [--update]

Starts `RDB_BINARY` (with r.js enabled) on a scratch directory and a free loopback port, runs
../shared/rqltest/run.py over the whole suite, and compares each file's pass count
with .ci/conformance-ratchet.json: any file below its recorded count fails the run.
With --update, raises the recorded counts to the new ones (never lowers them).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RATCHET = os.path.join(HERE, "conformance-ratchet.json")


def find_suite():
    for cand in (os.environ.get("RQLTEST_DIR"), os.path.join(ROOT, "..", "shared", "rqltest"),
                 "/work/shared/rqltest"):
        if cand and os.path.exists(os.path.join(cand, "run.py")):
            return os.path.abspath(cand)
    sys.exit("conformance: cannot find the shared rqltest suite (set RQLTEST_DIR)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("conformance: rdb exited early with status %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("conformance: rdb did not start listening on port %d" % port)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    update = "--update" in sys.argv[2:]
    suite = find_suite()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rdb-conformance-") as tmp:
        log = open(os.path.join(tmp, "rdb.log"), "w")
        proc = subprocess.Popen(
            # r.js is on: the suite has r.js tests (the server is a scratch one).
            [binary, "--directory", os.path.join(tmp, "data"), "--driver-port", str(port),
             "--enable-js"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
            out_json = os.path.join(tmp, "result.json")
            run = subprocess.run(
                [sys.executable, os.path.join(suite, "run.py"), "--port", str(port),
                 "--json", out_json, os.path.join(suite, "tests")],
                capture_output=True, text=True, timeout=1800)
            sys.stdout.write(run.stdout)
            if run.returncode != 0:
                sys.stderr.write(run.stderr)
                sys.exit("conformance: run.py failed with status %d" % run.returncode)
            with open(out_json) as f:
                result = json.load(f)
            if proc.poll() is not None:
                sys.exit("conformance: rdb crashed during the run (status %s)" % proc.returncode)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    counts = {f["file"]: f["passed"] for f in result["files"]}
    recorded = {}
    if os.path.exists(RATCHET):
        with open(RATCHET) as f:
            recorded = json.load(f)["passed"]
    regressions = [(name, want, counts.get(name, 0))
                   for name, want in sorted(recorded.items()) if counts.get(name, 0) < want]
    total = sum(counts.values())
    print("conformance total passed: %d (ratchet total %d)" % (total, sum(recorded.values())))
    if regressions:
        for name, want, got in regressions:
            print("REGRESSION %s: %d passed, ratchet requires %d" % (name, got, want))
        sys.exit(1)
    if update:
        merged = dict(recorded)
        for name, got in counts.items():
            merged[name] = max(got, merged.get(name, 0))
        with open(RATCHET, "w") as f:
            json.dump({"passed": dict(sorted(merged.items()))}, f, indent=1)
            f.write("\n")
        print("ratchet updated: %s" % RATCHET)


if __name__ == "__main__":
    main()
