"""Writer and checker for the index crash test (server/tests/index_kill.rs), through the
official driver.

  index_writer.py PORT write THREADS
      Creates table `test.ixkill` with three secondary indexes (a field, a multi index,
      a compound function), loads PRELOAD documents, then changes documents (replacing
      inserts, updates of indexed fields, deletes) from THREADS connections forever,
      printing "acked N" after each acknowledged write and "late-created" once a fourth
      index (built in the background over the loaded table) has been created. Stops
      quietly when the server goes away.
  index_writer.py PORT verify
      Waits for every index to be ready, then checks each one against a recomputation
      from the documents: the same entries (document ids with multiplicity), the same
      distinct values, index order, and exact get_all results for sampled values.
"""
import random
import sys
import threading
import time
from collections import Counter, defaultdict

from rethinkdb import r

DB, TABLE = "test", "ixkill"
IDS = 20000
PRELOAD = 20000


def connect(port):
    return r.connect(host="127.0.0.1", port=port, timeout=30)


def doc(i, rnd):
    return {
        "id": i,
        "v": rnd.randrange(500),
        "tags": [rnd.randrange(50) for _ in range(rnd.randrange(4))],
        "g": rnd.randrange(10),
        "pad": "x" * rnd.randrange(80),
    }


# The index functions, in ReQL and recomputed here (values that cannot be index keys,
# such as a missing field, leave the document out).
INDEXES = {
    "v": (lambda row: row["v"], False),
    "tags": (lambda row: row["tags"], True),
    "gv": (lambda row: [row["g"], row["v"]], False),
    "late": (lambda row: row["v"] % 7, False),
}


def expected_values(name, d):
    if name == "v":
        return [d["v"]]
    if name == "tags":
        return list(d["tags"])
    if name == "gv":
        return [[d["g"], d["v"]]]
    if name == "late":
        return [d["v"] % 7]
    raise ValueError(name)


def write(port, threads):
    c = connect(port)
    if TABLE in r.db(DB).table_list().run(c):
        r.db(DB).table_drop(TABLE).run(c)
    r.db(DB).table_create(TABLE).run(c)
    t = r.db(DB).table(TABLE)
    for name in ("v", "tags", "gv"):
        f, multi = INDEXES[name]
        t.index_create(name, f, multi=multi).run(c)
    t.index_wait().run(c)
    rnd = random.Random(1)
    for s in range(0, PRELOAD, 1000):
        t.insert([doc(i, rnd) for i in range(s, s + 1000)]).run(c)
    out = threading.Lock()
    acked = [0]

    def worker(k):
        rnd = random.Random(100 + k)
        try:
            conn = connect(port)
            while True:
                op = rnd.random()
                if op < 0.5:
                    docs = [doc(rnd.randrange(IDS), rnd) for _ in range(20)]
                    t.insert(docs, conflict="replace", durability="hard").run(conn)
                elif op < 0.8:
                    lo = rnd.randrange(IDS)
                    t.between(lo, lo + 10).update(
                        {"v": rnd.randrange(500), "tags": [rnd.randrange(50)]},
                        durability="hard").run(conn)
                else:
                    lo = rnd.randrange(IDS)
                    t.between(lo, lo + 5).delete(durability="hard").run(conn)
                with out:
                    acked[0] += 1
                    print("acked %d" % acked[0], flush=True)
        except Exception:
            return

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for th in ts:
        th.start()
    time.sleep(0.5)
    try:
        f, multi = INDEXES["late"]
        t.index_create("late", f, multi=multi).run(c)
        with out:
            print("late-created", flush=True)
    except Exception:
        pass
    for th in ts:
        th.join()


def verify(port):
    c = connect(port)
    t = r.db(DB).table(TABLE)
    t.index_wait().run(c)
    names = sorted(t.index_list().run(c))
    if names != sorted(INDEXES):
        raise SystemExit("indexes after restart: %r" % names)
    docs = list(t.run(c))
    problems = []
    for name in names:
        want = Counter()
        by_value = defaultdict(Counter)
        for d in docs:
            for v in expected_values(name, d):
                want[d["id"]] += 1
                by_value[repr(v)][d["id"]] += 1
        rows = list(t.order_by(index=name).run(c))
        got = Counter(d["id"] for d in rows)
        if got != want:
            extra = got - want
            missing = want - got
            problems.append("%s: %d extra, %d missing entries (e.g. %r / %r)" % (
                name, sum(extra.values()), sum(missing.values()),
                list(extra.items())[:3], list(missing.items())[:3]))
            continue
        if not INDEXES[name][1]:
            keys = [expected_values(name, d)[0] for d in rows]
            if keys != sorted(keys):
                problems.append("%s: order_by(index) is out of order" % name)
        distinct = list(t.distinct(index=name).run(c))
        want_distinct = sorted({repr(v): v for d in docs for v in expected_values(name, d)}.values())
        if distinct != want_distinct:
            problems.append("%s: distinct values differ" % name)
        for key in random.Random(7).sample(sorted(by_value), min(25, len(by_value))):
            value = eval(key)
            ids = Counter(d["id"] for d in t.get_all(value, index=name).run(c))
            if ids != by_value[key]:
                problems.append("%s: get_all(%s) differs" % (name, key))
                break
    if problems:
        raise SystemExit("indexes disagree with their table:\n  " + "\n  ".join(problems))
    print("verified %d indexes over %d documents" % (len(names), len(docs)))


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "write":
        write(port, int(sys.argv[3]))
    elif mode == "verify":
        verify(port)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
