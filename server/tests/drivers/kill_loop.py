"""Writer and checker for the kill -9 loop (server/tests/kill_loop.rs), through the
official driver. The test starts the server, runs `iterate`, SIGKILLs the server while
the writers are busy, restarts it on the same directory, and so on; `verify` checks the
last iteration.

  kill_loop.py PORT iterate STATE_DIR ITER
      ITER 0: creates table `test.kill_loop` (changefeed_retention_mb=256, so that the
      tokens stay resumable) with a secondary index on `g`. ITER > 0: verifies iteration
      ITER-1 as `verify` does. Then inserts the marker document "m-start-ITER", takes
      the token of its change from a resumable feed and saves it to STATE_DIR/token-ITER,
      prints "writing" and runs WRITERS threads (one connection each, hard durability)
      that insert documents with new ids and update documents they own, until the server
      goes away. Each write is logged to STATE_DIR/writes-ITER.log as "try ID V" before
      it is sent and "ack ID V" once acknowledged (appended, flushed and fsynced). Ends
      with "acked N ..." and exit status 0 when every writer stopped because the server
      went away, 1 when a write failed otherwise.
  kill_loop.py PORT verify STATE_DIR ITER
      After the kill and restart, checks iteration ITER against the documents validated
      before it (STATE_DIR/expected.json) and its log:
      (a) every document holds the value of its last acknowledged write, or of the one
          write that was in flight when the server died; no other document exists;
      (b) for each g in 0..7, get_all(g, index="g").count() equals the count from a
          full scan, and order_by(index="g") returns exactly the scanned documents in
          nondecreasing g;
      (c) a feed resumed from token-ITER yields, before the marker "m-end-ITER" written
          after the restart, exactly the iteration's writes that are stored: each
          acknowledged one once, in order per document, with the right old values;
          the in-flight one if and only if it was applied; nothing else.
      Then saves the stored values as STATE_DIR/expected.json for the next iteration.
"""
import json
import os
import random
import sys
import threading
import time
from collections import Counter

from rethinkdb import r

DB, TABLE = "test", "kill_loop"
WRITERS = 4
# Share of writes that insert a new document (the others update an owned one).
INSERT_SHARE = 0.4
# The test kills the server within about a second of "writing"; writers that run this
# long were never stopped, and fail.
WRITE_LIMIT_S = 120
FEED_LIMIT_S = 120


def connect(port):
    return r.connect(host="127.0.0.1", port=port, timeout=30)


def table():
    return r.db(DB).table(TABLE)


def owner(doc_id):
    return int(doc_id.split("-")[0][1:])


def make_doc(doc_id, v):
    """The whole document for value v: every field follows from the id and v, so a
    stored document can be checked completely."""
    return {"id": doc_id, "owner": owner(doc_id), "v": v, "g": v % 7, "pad": "p" * (v % 61)}


def patch(v):
    return {"v": v, "g": v % 7, "pad": "p" * (v % 61)}


def value(it, k, seq):
    # Unique per write and increasing per document across iterations.
    return it * 10_000_000 + k * 1_000_000 + seq


def save_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    d = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(d)
    finally:
        os.close(d)


def load_log(path):
    """Per document, its writes in the order sent: [(v, acked)]. A writer is sequential
    and stops at its first failed write, so only a document's last write can be
    unacknowledged."""
    writes = {}
    if not os.path.exists(path):
        return writes
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                raise SystemExit("malformed log line %r in %s" % (line, path))
            kind, doc_id, v = parts[0], parts[1], int(parts[2])
            ws = writes.setdefault(doc_id, [])
            if kind == "try":
                if ws and not ws[-1][1]:
                    raise SystemExit("%s: write %d sent before %d was acknowledged" % (doc_id, v, ws[-1][0]))
                ws.append((v, False))
            elif kind == "ack":
                if not ws or ws[-1] != (v, False):
                    raise SystemExit("%s: acknowledgement of %d that was not sent" % (doc_id, v))
                ws[-1] = (v, True)
            else:
                raise SystemExit("malformed log line %r in %s" % (line, path))
    return writes


def verify(port, state, it):
    c = connect(port)
    t = table()
    t.index_wait().run(c)
    with open(os.path.join(state, "expected.json")) as f:
        before = json.load(f)
    writes = load_log(os.path.join(state, "writes-%d.log" % it))
    stored = {}
    markers = set()
    for d in t.run(c):
        if d["id"].startswith("m-"):
            markers.add(d["id"])
        else:
            stored[d["id"]] = d
    problems = []
    if "m-start-%d" % it not in markers:
        problems.append("the acknowledged marker m-start-%d is missing" % it)

    # (a) Acknowledged values. `applied` lists, per written document, the writes of this
    # iteration that are stored: the acknowledged ones, plus the in-flight one if the
    # document holds its value.
    applied = {}
    n_acked = n_inflight_applied = n_inflight_lost = 0
    for doc_id, ws in writes.items():
        acked = [v for v, ok in ws if ok]
        n_acked += len(acked)
        inflight = ws[-1][0] if not ws[-1][1] else None
        want = acked[-1] if acked else before.get(doc_id)
        got = stored[doc_id]["v"] if doc_id in stored else None
        if got == want:
            applied[doc_id] = acked
            if inflight is not None:
                n_inflight_lost += 1
        elif inflight is not None and got == inflight:
            applied[doc_id] = acked + [inflight]
            n_inflight_applied += 1
        else:
            problems.append("%s: last acknowledged value %r (in flight %r), stored %r" % (doc_id, want, inflight, got))
            continue
        if doc_id in stored and stored[doc_id] != make_doc(doc_id, got):
            problems.append("%s: damaged document %r" % (doc_id, stored[doc_id]))
    for doc_id, v in before.items():
        if doc_id in writes:
            continue
        if doc_id not in stored:
            problems.append("%s: lost (value %d, not written since)" % (doc_id, v))
        elif stored[doc_id] != make_doc(doc_id, v):
            problems.append("%s: changed without a write: %r, expected v=%d" % (doc_id, stored[doc_id], v))
    for doc_id in stored:
        if doc_id not in before and doc_id not in writes:
            problems.append("%s: stored but never written" % doc_id)
    if problems:
        fail("(a) acknowledged writes", it, problems)

    # (b) The index agrees with the documents.
    by_g = Counter(d["g"] for d in stored.values())
    for g in range(7):
        n = t.get_all(g, index="g").count().run(c)
        if n != by_g[g]:
            problems.append("get_all(%d, index='g').count() is %d, a full scan finds %d" % (g, n, by_g[g]))
    rows = list(t.order_by(index="g").run(c))
    gs = [d["g"] for d in rows]
    if any(a > b for a, b in zip(gs, gs[1:])):
        problems.append("order_by(index='g') is out of order")
    got_ids = Counter(d["id"] for d in rows)
    want_ids = Counter(list(stored))
    if got_ids != want_ids:
        problems.append("order_by(index='g'): %d extra, %d missing entries (e.g. %r / %r)" % (
            sum((got_ids - want_ids).values()), sum((want_ids - got_ids).values()),
            list(got_ids - want_ids)[:3], list(want_ids - got_ids)[:3]))
    if problems:
        fail("(b) index on g", it, problems)

    # (c) The feed resumed from the token taken before the iteration's writes.
    with open(os.path.join(state, "token-%d" % it)) as f:
        token = f.read().strip()
    fc = connect(port)
    feed = t.changes(resume_token=token).run(fc)
    end = "m-end-%d" % it
    res = t.insert({"id": end}, durability="hard").run(c)
    if res["inserted"] != 1:
        raise SystemExit("end marker: %r" % res)
    seen = {}
    state_now = dict(before)
    n_changes = 0
    deadline = time.monotonic() + FEED_LIMIT_S
    while True:
        if time.monotonic() > deadline:
            problems.append("the resumed feed did not reach %s within %d s (%d changes)" % (end, FEED_LIMIT_S, n_changes))
            break
        try:
            ch = feed.next(wait=5)
        except r.ReqlTimeoutError:
            continue
        n_changes += 1
        nv, ov = ch.get("new_val"), ch.get("old_val")
        if not ch.get("token"):
            problems.append("change without a token: %r" % ch)
        doc_id = (nv or ov or {}).get("id")
        if doc_id == end:
            break
        if doc_id is None or doc_id.startswith("m-") or nv is None:
            problems.append("unexpected change %r" % ch)
            continue
        v = nv["v"]
        seen.setdefault(doc_id, []).append(v)
        if nv != make_doc(doc_id, v):
            problems.append("%s: new_val %r" % (doc_id, nv))
        prev = state_now.get(doc_id)
        if (ov or {}).get("v") != prev:
            problems.append("%s: old_val %r, the previous value is %r" % (doc_id, ov, prev))
        state_now[doc_id] = v
    fc.close()
    for doc_id in sorted(set(seen) | set(applied)):
        got, want = seen.get(doc_id, []), applied.get(doc_id, [])
        if got != want:
            problems.append("%s: the resumed feed has %r, the stored writes are %r" % (doc_id, got[:10], want[:10]))
    if problems:
        fail("(c) resumed feed", it, problems)

    save_atomically(os.path.join(state, "expected.json"),
                    json.dumps({d: s["v"] for d, s in stored.items()}))
    print("verified %d: %d acknowledged writes, in flight at the kill %d applied / %d not, "
          "%d documents, %d changes resumed" % (
              it, n_acked, n_inflight_applied, n_inflight_lost, len(stored), n_changes - 1), flush=True)


def fail(what, it, problems):
    raise SystemExit("iteration %d, %s: %d problems\n  %s" % (it, what, len(problems), "\n  ".join(problems[:20])))


def setup(port, state):
    c = connect(port)
    r.db(DB).table_create(TABLE, changefeed_retention_mb=256).run(c)
    table().index_create("g").run(c)
    table().index_wait("g").run(c)
    save_atomically(os.path.join(state, "expected.json"), "{}")


def take_token(port, it):
    c = connect(port)
    t = table()
    feed = t.changes(resumable=True, include_initial=False).run(c)
    start = "m-start-%d" % it
    res = t.insert({"id": start}, durability="hard").run(c)
    if res["inserted"] != 1:
        raise SystemExit("start marker: %r" % res)
    while True:
        ch = feed.next(wait=30)
        if (ch.get("new_val") or {}).get("id") == start:
            break
    if not ch.get("token"):
        raise SystemExit("the resumable feed's change has no token: %r" % ch)
    c.close()
    return ch["token"]


def iterate(port, state, it):
    if it == 0:
        setup(port, state)
    else:
        verify(port, state, it - 1)
    save_atomically(os.path.join(state, "token-%d" % it), take_token(port, it))
    with open(os.path.join(state, "expected.json")) as f:
        pools = {k: [] for k in range(WRITERS)}
        for doc_id in json.load(f):
            pools[owner(doc_id)].append(doc_id)

    log = open(os.path.join(state, "writes-%d.log" % it), "a")
    lock = threading.Lock()
    stats = Counter()
    failures = []

    def record(kind, doc_id, v):
        with lock:
            log.write("%s %s %d\n" % (kind, doc_id, v))
            log.flush()
            if kind == "ack":
                os.fsync(log.fileno())
                stats["acked"] += 1

    def writer(k):
        rnd = random.Random(it * 1000 + k)
        pool = pools[k]
        t = table()
        try:
            conn = connect(port)
        except (r.ReqlDriverError, OSError):
            return
        seq = 0
        limit = time.monotonic() + WRITE_LIMIT_S
        while time.monotonic() < limit:
            seq += 1
            v = value(it, k, seq)
            insert = not pool or rnd.random() < INSERT_SHARE
            doc_id = "k%d-i%d-%d" % (k, it, seq) if insert else rnd.choice(pool)
            record("try", doc_id, v)
            try:
                if insert:
                    res = t.insert(make_doc(doc_id, v), durability="hard").run(conn)
                    ok = res["inserted"] == 1 and res["errors"] == 0
                else:
                    res = t.get(doc_id).update(patch(v), durability="hard").run(conn)
                    ok = res["replaced"] == 1 and res["errors"] == 0
            except (r.ReqlDriverError, OSError):
                # The server was killed: what was acknowledged is in the log.
                return
            except Exception as e:
                failures.append("writer %d: %s %s: %r" % (k, "insert" if insert else "update", doc_id, e))
                return
            if not ok:
                failures.append("writer %d: %s %s: %r" % (k, "insert" if insert else "update", doc_id, res))
                return
            record("ack", doc_id, v)
            stats["inserts" if insert else "updates"] += 1
            if insert:
                pool.append(doc_id)
        failures.append("writer %d: the server was not killed within %d s" % (k, WRITE_LIMIT_S))

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    print("writing", flush=True)
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    log.close()
    print("acked %d (%d inserts, %d updates)" % (stats["acked"], stats["inserts"], stats["updates"]), flush=True)
    if failures:
        raise SystemExit("\n".join(failures))


def main():
    port, mode, state, it = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "iterate":
        iterate(port, state, it)
    elif mode == "verify":
        verify(port, state, it)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
