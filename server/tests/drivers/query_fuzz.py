"""Random hostile queries for a bounded time; the server must answer each (an error is
fine) and never die.

Usage: query_fuzz.py PORT SECONDS SEED. Queries are built from a small grammar of ReQL
terms over random data: deep nesting (data and terms), big ranges, string and array
growth in folds, grouping, sorting, JSON round trips, raised `array_limit`s; plus raw
frames of random deep or malformed JSON. Prints what it ran and the error classes seen.
"""
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter

from rethinkdb import r

port, seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
conn = r.connect(port=port, timeout=30)


def datum(depth):
    k = rng.randrange(7)
    if depth <= 0 or k < 3:
        return rng.choice([None, True, 1, -2.5, "s", "x" * rng.randrange(100), 10**15])
    if k < 5:
        return [datum(depth - 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": datum(depth - 1) for i in range(rng.randrange(4))}


def deep_value(n):
    shape = rng.randrange(3)
    if shape == 0:
        return r.range(n).fold([], lambda acc, x: [acc])
    if shape == 1:
        return r.range(n).fold({}, lambda acc, x: {"a": acc})
    return r.range(n).fold("x", lambda acc, x: acc.add(acc)) if n < 40 else r.expr("x")


def seq():
    n = rng.choice([10, 1000, 10**5, 10**7, 10**10])
    s = r.range(n)
    for _ in range(rng.randrange(3)):
        op = rng.randrange(6)
        if op == 0:
            s = s.map(lambda x: [x, x])
        elif op == 1:
            s = s.filter(lambda x: x.coerce_to("string").count().gt(0))
        elif op == 2:
            s = s.concat_map(lambda x: r.range(rng.choice([2, 1000, 10**6])))
        elif op == 3:
            s = s.limit(rng.choice([5, 10**6]))
        elif op == 4:
            s = s.union(r.range(rng.choice([3, 10**6])))
        else:
            s = s.map(lambda x: r.expr("y").add(x.coerce_to("string")))
    return s


def query():
    k = rng.randrange(12)
    v = deep_value(rng.choice([10, 1000, 30000, 100000]))
    if k == 0:
        return v.to_json_string().count()
    if k == 1:
        return v.eq(v)
    if k == 2:
        return r.expr([1]).append(v).distinct().count()
    if k == 3:
        return r.expr([v, v, 1]).order_by(lambda x: x).count()
    if k == 4:
        return v.coerce_to("string").count()
    if k == 5:
        return r.expr({"a": datum(3)}).merge({"b": v}).keys()
    if k == 6:
        return seq().count()
    if k == 7:
        return seq().coerce_to("array").count()
    if k == 8:
        return seq().group(lambda x: x.coerce_to("string")).count().ungroup().count()
    if k == 9:
        return seq().order_by(lambda x: x.coerce_to("string")).count()
    if k == 10:
        return r.json(r.expr(datum(4)).to_json_string()).to_json_string().count()
    return r.range(rng.choice([20, 30, 40])).fold([1], lambda a, x: a.add(a)).count()


def raw_frames():
    """A raw connection sending random deep or malformed JSON frames."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    # The same handshake the driver does is long; V1_0 with an unknown user is refused,
    # which is also a path worth hitting. Send the magic and junk.
    s.sendall(struct.pack("<I", 0x34C2BDC3))
    junk = rng.choice([b"{" * 5000, b"[" * 20000 + b"]" * 20000, bytes(rng.randrange(256) for _ in range(3000))])
    try:
        s.sendall(junk + b"\0")
        s.recv(4096)
    except OSError:
        pass
    s.close()


def deep_term_frame():
    """A START whose term JSON is nested thousands deep (through the driver)."""
    t = r.expr(1)
    for _ in range(rng.choice([50, 200, 3000])):
        t = t.add(1)
    return t


# A query may legitimately run for minutes (a count over 10^13 rows): each gets
# QUERY_SECONDS, then its connection is closed, which must stop it on the server.
QUERY_SECONDS = 5


def run_bounded(q, opts):
    c = conn
    timer = threading.Timer(QUERY_SECONDS, lambda: c.close(noreply_wait=False))
    timer.start()
    try:
        return q.run(c, **opts)
    finally:
        timer.cancel()


start = time.time()
kinds = Counter()
runs = 0
while time.time() - start < seconds:
    runs += 1
    try:
        if rng.randrange(10) == 0:
            raw_frames()
            kinds["raw"] += 1
            continue
        q = deep_term_frame() if rng.randrange(8) == 0 else query()
        limit = rng.choice([None, None, 4, 10**6, 10**12])
        opts = {"array_limit": limit} if limit else {}
        run_bounded(q, opts)
        kinds["answered"] += 1
    except r.ReqlDriverError as e:
        # The connection broke (or its time was up): the server must still be there.
        kinds["driver:" + str(e)[:40]] += 1
        conn = r.connect(port=port, timeout=30)
    except AttributeError:
        # The driver closing a socket that another thread is reading (its own race).
        kinds["closed while reading"] += 1
        conn = r.connect(port=port, timeout=30)
    except RecursionError:
        kinds["client recursion limit"] += 1
        conn.close(noreply_wait=False)
        conn = r.connect(port=port, timeout=30)
    except r.ReqlError as e:
        kinds[type(e).__name__] += 1
    # The server must keep answering a trivial query promptly.
    t0 = time.time()
    assert r.expr(1).run(conn) == 1
    assert time.time() - t0 < 5, "trivial query took over 5 s"

print(f"{runs} hostile queries in {seconds:.0f} s (seed {seed})")
for k, n in sorted(kinds.items()):
    print(f"  {k}: {n}")
