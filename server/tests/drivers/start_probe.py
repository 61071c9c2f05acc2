"""Probe for the start-up test (server/tests/start_loop.rs), through the official driver.

  start_probe.py PORT [populate|check]
      Imports the driver and prints "ready", then waits for one line on stdin (the test
      sends it right after spawning the server, so the interpreter's own start-up is not
      counted against the server; with stdin at end of file it goes on at once). Then it
      connects, retrying while nothing listens yet, until r.expr(1) answers, and prints
      "answered". With `populate` it then creates table `test.start` holding DOCS
      documents and a secondary index on `g`, waits for the index, and prints
      "populated DOCS". With `check` it then requires that table to hold its DOCS
      documents and the index to find its share of them, and prints "checked DOCS".
"""
import sys
import time

from rethinkdb import r

DOCS = 10000
# Bounds the retries: the test fails long before this, it only keeps a lost probe from
# running forever.
GIVE_UP_S = 60


def answer(port):
    deadline = time.monotonic() + GIVE_UP_S
    while True:
        try:
            c = r.connect(host="127.0.0.1", port=port, timeout=5)
            got = r.expr(1).run(c)
            if got != 1:
                raise SystemExit("r.expr(1) answered %r" % (got,))
            return c
        except (r.ReqlDriverError, OSError):
            # Not listening yet (or the handshake was cut by a server still starting).
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def populate(c):
    db = r.db("test")
    if "start" in db.table_list().run(c):
        db.table_drop("start").run(c)
    db.table_create("start").run(c)
    t = db.table("start")
    t.index_create("g").run(c)
    for s in range(0, DOCS, 1000):
        res = t.insert([{"id": i, "g": i % 7, "pad": "p" * 40} for i in range(s, s + 1000)]).run(c)
        if res["inserted"] != 1000:
            raise SystemExit("insert: %r" % res)
    t.index_wait("g").run(c)
    check(c)
    print("populated %d" % DOCS, flush=True)


def check(c):
    t = r.db("test").table("start")
    n = t.count().run(c)
    if n != DOCS:
        raise SystemExit("table holds %d documents, expected %d" % (n, DOCS))
    n = t.get_all(3, index="g").count().run(c)
    if n != len(range(3, DOCS, 7)):
        raise SystemExit("get_all(3, index='g') counted %d" % n)


def main():
    port = int(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    c = answer(port)
    print("answered", flush=True)
    mode = sys.argv[2] if len(sys.argv) > 2 else None
    if mode == "populate":
        populate(c)
    elif mode == "check":
        check(c)
        print("checked %d" % DOCS, flush=True)
    elif mode is not None:
        raise SystemExit(__doc__)
    c.close()


if __name__ == "__main__":
    main()
