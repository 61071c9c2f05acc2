"""Client side of the resumable changefeed tests (server/tests/feeds.rs), through the
official Python driver.

  feed_resume.py PORT disconnect
      Resume after a disconnect on a running server: the resumed feed gets exactly the
      changes after the token, then live ones.
  feed_resume.py PORT setup
      Creates table `test.resume`.
  feed_resume.py PORT stream STATE_FILE
      Runs a resumable feed and a writer together: the writer updates 50 documents
      (each update raises the document's counter `n` by one, hard durability) and
      prints "acked DOC N" per acknowledged update; the feed appends every change it
      receives, with its token, to STATE_FILE. Runs until killed.
  feed_resume.py PORT check STATE_FILE ACKED_FILE
      Resumes from the last token in STATE_FILE, then checks that over both runs every
      acknowledged update appeared exactly once, in order for each document.
  feed_resume.py PORT expired RETENTION_MB
      Takes a token on a fresh table created with changefeed_retention_mb=RETENTION_MB,
      writes enough to roll the log over (the server runs with small log segments and
      memtables), then resumes: prints "resumed" or "expired: <message>".
"""
import json
import sys
import threading
import time

from rethinkdb import r

DOCS = 50


def connect(port):
    return r.connect(host="127.0.0.1", port=port, timeout=20)


def drain(feed, wait=1.0):
    out = []
    while True:
        try:
            out.append(feed.next(wait=wait))
        except r.ReqlTimeoutError:
            return out


def disconnect(port):
    c, w = connect(port), connect(port)
    if "dis" in r.db("test").table_list().run(c):
        r.db("test").table_drop("dis").run(c)
    r.db("test").table_create("dis").run(c)
    t = r.db("test").table("dis")
    feed = t.changes(resumable=True).run(c)
    t.insert([{"id": i} for i in range(10)]).run(w)
    first = [feed.next(wait=5) for _ in range(4)]
    token = first[-1]["token"]
    c.close()
    # Changes while nobody listens, including updates of documents already seen.
    t.insert([{"id": i} for i in range(10, 15)]).run(w)
    t.get(0).update({"v": 1}).run(w)
    t.get(11).delete().run(w)
    c = connect(port)
    feed = t.changes(resume_token=token).run(c)
    got = drain(feed)
    # Live changes continue after the replay.
    t.insert({"id": 99}).run(w)
    got += drain(feed)
    seen = [(g["old_val"], g["new_val"]) for g in got]
    want_ids = sorted(set(range(15)) - {x["new_val"]["id"] for x in first}) + [99]
    new_ids = sorted(g["new_val"]["id"] for g in got if g["old_val"] is None)
    assert new_ids == want_ids, (new_ids, want_ids)
    assert ({"id": 0}, {"id": 0, "v": 1}) in seen, seen
    assert ({"id": 11}, None) in seen, seen
    assert len(got) == len(want_ids) + 2, seen
    assert all("token" in g for g in got)
    print("resume after disconnect: ok (%d changes)" % len(got))


def union(port):
    c, w = connect(port), connect(port)
    if "uni" in r.db("test").table_list().run(c):
        r.db("test").table_drop("uni").run(c)
    r.db("test").table_create("uni").run(c)
    t = r.db("test").table("uni")
    feed = t.changes().union(t.get(7).changes()).run(c)
    t.insert([{"id": 7}, {"id": 8}]).run(w)
    got = sorted(g["new_val"]["id"] for g in drain(feed))
    # The table feed sees both documents, the point feed document 7.
    assert got == [7, 7, 8], got
    print("union of feeds: ok")


def setup(port):
    c = connect(port)
    if "resume" in r.db("test").table_list().run(c):
        r.db("test").table_drop("resume").run(c)
    r.db("test").table_create("resume").run(c)
    r.db("test").table("resume").insert([{"id": i, "n": 0} for i in range(DOCS)]).run(c)
    print("ready", flush=True)


def stream(port, state_file):
    t = r.db("test").table("resume")
    c = connect(port)
    feed = t.changes(resumable=True).run(c)
    out = open(state_file, "a")

    def reader():
        try:
            for ch in feed:
                out.write(json.dumps(ch) + "\n")
                out.flush()
        except Exception:
            return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    w = connect(port)
    i = 0
    while True:
        doc = i % DOCS
        res = t.get(doc).update({"n": r.row["n"] + 1}, durability="hard", return_changes=True).run(w)
        n = res["changes"][0]["new_val"]["n"]
        print("acked %d %d" % (doc, n), flush=True)
        i += 1


def check(port, state_file, acked_file):
    seen = {}  # doc -> list of n values received, in order
    token = None
    for line in open(state_file):
        line = line.strip()
        if not line:
            continue
        try:
            ch = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        token = ch["token"]
        nv = ch["new_val"]
        seen.setdefault(nv["id"], []).append(nv["n"])
    assert token, "the feed received nothing before the kill"
    acked = {}
    for line in open(acked_file):
        _, doc, n = line.split()
        acked[int(doc)] = max(acked.get(int(doc), 0), int(n))
    c = connect(port)
    feed = r.db("test").table("resume").changes(resume_token=token).run(c)
    for ch in drain(feed, wait=2.0):
        nv = ch["new_val"]
        seen.setdefault(nv["id"], []).append(nv["n"])
    problems = []
    for doc in range(DOCS):
        ns = seen.get(doc, [])
        # Exactly once and in order: the counter's values 1, 2, 3... with no gap or repeat.
        if ns != list(range(1, len(ns) + 1)):
            problems.append("doc %d: %r" % (doc, ns[:20]))
        if len(ns) < acked.get(doc, 0):
            problems.append("doc %d: acknowledged %d updates, saw %d" % (doc, acked[doc], len(ns)))
    if problems:
        raise SystemExit("resumed feed lost, repeated or reordered changes:\n  " + "\n  ".join(problems[:10]))
    print("resume after restart: ok (%d updates acknowledged)" % sum(acked.values()))


def expired(port, retention_mb):
    c = connect(port)
    name = "exp%d" % retention_mb
    if name in r.db("test").table_list().run(c):
        r.db("test").table_drop(name).run(c)
    r.db("test").table_create(name, changefeed_retention_mb=retention_mb).run(c)
    t = r.db("test").table(name)
    feed = t.changes(resumable=True).run(c)
    t.insert({"id": "first"}).run(c)
    token = feed.next(wait=5)["token"]
    feed.close()
    pad = "x" * 1000
    for b in range(12):
        t.insert([{"pad": pad} for _ in range(1000)], durability="soft").run(c)
    t.sync().run(c)
    time.sleep(1.0)  # background flushes delete old log segments
    try:
        f2 = t.changes(resume_token=token).run(c)
        got = drain(f2, wait=2.0)
        print("resumed %d" % len(got))
    except r.ReqlError as e:
        print("expired: %s" % e.message)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "disconnect":
        disconnect(port)
    elif mode == "union":
        union(port)
    elif mode == "setup":
        setup(port)
    elif mode == "stream":
        stream(port, sys.argv[3])
    elif mode == "check":
        check(port, sys.argv[3], sys.argv[4])
    elif mode == "expired":
        expired(port, int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
