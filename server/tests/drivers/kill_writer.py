"""Writer and checker for the kill -9 test (server/tests/kill.rs), via the official driver.

  kill_writer.py PORT write TOTAL THREADS [SKIP_FILE]
      Inserts documents 0..TOTAL in batches of 1000 (hard durability) from THREADS
      connections; prints "acked START END" after each acknowledged batch. Batches listed
      in SKIP_FILE (lines "START END") are not sent again. Stops quietly when the server
      goes away.
  kill_writer.py PORT verify ACKED_FILE [TOTAL]
      Checks that every batch in ACKED_FILE is stored exactly (count and checksum), and
      with TOTAL that the table holds exactly TOTAL documents.
"""
import sys
import threading

from rethinkdb import r

BATCH = 1000
DB, TABLE = "test", "kill"


def value(i):
    return (i * 7919) % 1000003


def connect(port):
    return r.connect(host="127.0.0.1", port=port, timeout=20)


def write(port, total, threads, skip_file):
    skip = set()
    if skip_file:
        with open(skip_file) as f:
            skip = {int(line.split()[0]) for line in f if line.strip()}
    c = connect(port)
    if TABLE not in r.db(DB).table_list().run(c):
        r.db(DB).table_create(TABLE).run(c)
    c.close()
    starts = [s for s in range(0, total, BATCH) if s not in skip]
    out = threading.Lock()

    def worker(k):
        try:
            conn = connect(port)
            for s in starts[k::threads]:
                e = min(s + BATCH, total)
                docs = [{"id": i, "v": value(i), "pad": "p" * 50} for i in range(s, e)]
                res = r.db(DB).table(TABLE).insert(docs, durability="hard", conflict="replace").run(conn)
                if res["errors"]:
                    raise SystemExit("insert errors: %r" % res)
                with out:
                    print("acked %d %d" % (s, e), flush=True)
        except SystemExit:
            raise
        except Exception:
            # The server was killed: what was acknowledged is already printed.
            return

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def verify(port, acked_file, total):
    c = connect(port)
    t = r.db(DB).table(TABLE)
    ranges = []
    with open(acked_file) as f:
        for line in f:
            if line.strip():
                s, e = map(int, line.split())
                ranges.append((s, e))
    bad = []
    for s, e in ranges:
        got = t.between(s, e).map(lambda d: [1, d["v"], d["pad"].count()]).reduce(
            lambda a, b: [a[0] + b[0], a[1] + b[1], a[2] + b[2]]).default([0, 0, 0]).run(c)
        want = [e - s, sum(value(i) for i in range(s, e)), 50 * (e - s)]
        if got != want:
            bad.append((s, e, got, want))
    if bad:
        raise SystemExit("lost or damaged acknowledged documents: %r" % bad[:5])
    if total is not None:
        n = t.count().run(c)
        if n != total:
            raise SystemExit("table holds %d documents, expected %d" % (n, total))
    print("verified %d batches" % len(ranges))


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "write":
        write(port, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    elif mode == "verify":
        verify(port, sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
