#!/usr/bin/env python3
"""Hostile queries against a running rdb: deeply nested data, memory bombs, a runaway
query next to a light one, and STOP of a running query. Each must get RethinkDB's answer
(or a resource-limit error) while the server keeps serving.

usage: hostile_queries.py PORT SERVER_PID
Exits non-zero with a message on the first failed check; prints one line per check.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time

from rethinkdb import r
from rethinkdb.ast import ReQLEncoder
from rethinkdb.errors import ReqlDriverError, ReqlResourceLimitError

PORT = int(sys.argv[1])
SERVER_PID = int(sys.argv[2])
V1_0 = 0x34C2BDC3


def check(cond, what, got=None):
    if not cond:
        sys.exit("FAILED: %s (got %r)" % (what, got))
    print("ok -", what)


def connect():
    return r.connect("127.0.0.1", PORT, user="admin", password="", timeout=20)


c = connect()


def alive(after):
    # Every hostile query must leave the server answering the next one.
    got = r.expr(1).run(c)
    if got != 1:
        sys.exit("FAILED: server does not answer r.expr(1) after %s (got %r)" % (after, got))


def expect(what, query, want, **opts):
    got = query.run(c, **opts)
    check(got == want, what, got)
    alive(what)


def expect_limit(what, query, prefix="", **opts):
    try:
        got = query.run(c, **opts)
    except ReqlResourceLimitError as e:
        check(e.message.startswith(prefix), what + ": ReqlResourceLimitError", e.message)
    else:
        check(False, what + ": ReqlResourceLimitError", got)
    alive(what)


# --- a. deep data --------------------------------------------------------------------
# 100,001 nested arrays, built on the server. Its value is never fetched: the Python
# client's JSON decoder would hit its own recursion limit.
deep = r.range(100000).fold([], lambda acc, x: [acc])
expect("deep: to_json_string has 200,002 characters", deep.to_json_string().count(), 200002)
expect("deep: eq itself", deep.eq(deep), True)
expect("deep: not lt itself", deep.lt(deep), False)
expect("deep: contains", r.expr([1]).append(deep).contains(deep), True)
expect("deep: distinct", r.expr([1]).append(deep).distinct().count(), 2)
expect("deep: order_by", r.expr([1]).append(deep).append(deep).order_by(lambda x: x).count(), 3)
expect("deep: group by the deep value",
       r.expr([1]).append(deep).group(lambda x: x).count().ungroup().count(), 2)
expect("deep: coerce_to string", deep.coerce_to("string").count(), 200002)
expect("deep: merged into an object", r.expr({"a": 1}).merge({"b": deep}).to_json_string().count(),
       200014)
expect("deep: type_of", deep.type_of(), "ARRAY")
# info() pretty-prints the value, indenting each level: quadratic in the depth.
expect_limit("deep: info", deep.info())

# --- b. stored deep documents ------------------------------------------------------
if "test" not in r.db_list().run(c):
    r.db_create("test").run(c)
if "hostile" in r.db("test").table_list().run(c):
    r.db("test").table_drop("hostile").run(c)
r.db("test").table_create("hostile").run(c)
t = r.db("test").table("hostile")
res = t.insert([{"id": "x", "d": r.range(2000).fold([], lambda a, x: [a])},
                {"id": "y", "d": deep}]).run(c)
check(res["inserted"] == 2, "stored: two deep documents inserted", res)
# {"d":<2001 nested arrays>,"id":"x"}: 5 + 4002 + 10 characters.
expect("stored: get of the shallower one", t.get("x").to_json_string().count(), 4017)
expect("stored: count", t.count(), 2)
got = t.map(lambda x: x["id"]).coerce_to("array").run(c)
check(sorted(got) == ["x", "y"], "stored: scan reads both", got)
res = t.get("x").update({"z": 1}).run(c)
check(res["replaced"] == 1, "stored: update", res)
res = t.index_create("d").run(c)
check(res == {"created": 1}, "stored: index_create on the deep field", res)
# run() takes no client-side timeout: wait in a thread (with its own connection) instead.
waited = []
waiter = threading.Thread(
    target=lambda: waited.append(t.index_wait("d").pluck("index", "ready").run(connect())),
    daemon=True)
waiter.start()
waiter.join(30)
check(waited == [[{"index": "d", "ready": True}]], "stored: index built within 30 s", waited)
res = t.delete().run(c)
check(res["deleted"] == 2, "stored: delete both", res)
r.db("test").table_drop("hostile").run(c)
alive("stored deep documents")

# --- c. memory bombs -----------------------------------------------------------------
expect_limit("bomb: array doubled 30 times", r.range(30).fold([1], lambda a, x: a.add(a)),
             array_limit=10**12)
expect_limit("bomb: string doubled 40 times", r.range(40).fold("x", lambda a, x: a.add(a)).count())
expect_limit("bomb: ten million groups", r.range(10**7).group(lambda x: x).count(),
             prefix="Too many groups")
expect_limit("bomb: 10^8 rows coerced to an array", r.range(10**8).coerce_to("array").count(),
             array_limit=10**9)
expect_limit("bomb: 10^8 rows ordered", r.range(10**8).order_by(lambda x: x).count(),
             array_limit=10**9)
expect_limit("bomb: sample of 10^8 rows", r.range(10**8).sample(10**8).count(), array_limit=10**9)
expect_limit("bomb: 10^14 rows from concat_map",
             r.range(10**7).concat_map(lambda x: r.range(10**7)).coerce_to("array").count(),
             array_limit=10**12)


# --- d. a runaway query ------------------------------------------------------------
def cpu_seconds():
    with open("/proc/%d/stat" % SERVER_PID) as f:
        # Fields after the parenthesised command name; utime and stime are 14 and 15.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(secs):
    before, start = cpu_seconds(), time.time()
    time.sleep(secs)
    return (cpu_seconds() - before) / (time.time() - start)


def run_away(conn, outcome):
    try:
        outcome.append(r.range(10**10).count().run(conn))
    except ReqlDriverError as e:
        outcome.append(e)  # expected: its connection is closed under it


a = connect()
outcome = []
runaway = threading.Thread(target=run_away, args=(a, outcome), daemon=True)
runaway.start()
time.sleep(0.3)
b = connect()
times = []
for _ in range(200):
    start = time.time()
    r.expr(1).run(b)
    times.append(time.time() - start)
times.sort()
p99 = times[int(len(times) * 0.99) - 1]
check(runaway.is_alive(), "runaway: still running while the light queries ran")
check(p99 < 0.05, "runaway: r.expr(1) p99 %.1f ms next to it" % (p99 * 1000), p99)
busy = cpu_share(0.5)
# The driver may log "'NoneType' object has no attribute 'close'" here: its reading thread
# and this one both close the socket (a race in the client, harmless).
a.close(noreply_wait=False)
time.sleep(0.5)
idle = cpu_share(1.0)
# The busy figure shows the query was running; the idle one that closing its client ended it.
check(idle < 0.3, "runaway: server CPU %.0f%% after its client closed (%.0f%% before)"
      % (idle * 100, busy * 100), idle)
b.close()
runaway.join(5)
check(not runaway.is_alive() and isinstance(outcome[0], ReqlDriverError),
      "runaway: its client saw the connection close", outcome)
alive("runaway query")


# --- e. STOP of a running query, raw protocol -----------------------------------------
# The Python driver sends STOP only for a cursor it holds, so speak the protocol directly.
def read_nul(s):
    buf = b""
    while True:
        ch = s.recv(1)
        if not ch:
            raise EOFError("closed during handshake")
        if ch == b"\0":
            return json.loads(buf)
        buf += ch


def raw_connect():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=admin,r=" + nonce
    s.sendall(struct.pack("<I", V1_0) + json.dumps({
        "protocol_version": 0, "authentication_method": "SCRAM-SHA-256",
        "authentication": "n,," + bare}).encode() + b"\0")
    check(read_nul(s)["success"], "raw: server hello")
    first = read_nul(s)["authentication"]
    attrs = dict(kv.split("=", 1) for kv in first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", b"", base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join([bare, first, without_proof]).encode()
    sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
    proof = bytes(x ^ y for x, y in zip(client_key, sig))
    s.sendall(json.dumps({"authentication": without_proof + ",p="
                          + base64.b64encode(proof).decode()}).encode() + b"\0")
    check(read_nul(s)["success"], "raw: authenticated")
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def read_response(s, secs):
    """The next (token, response), or None if nothing arrives within `secs`."""
    s.settimeout(secs)
    try:
        hdr = s.recv(1, socket.MSG_PEEK)
    except socket.timeout:
        return None
    if not hdr:
        raise EOFError("connection closed")
    s.settimeout(10)
    token, length = struct.unpack("<QI", recv_exact(s, 12))
    return token, json.loads(recv_exact(s, length))


def send(s, token, query):
    body = ReQLEncoder().encode(query).encode()
    s.sendall(struct.pack("<QI", token, len(body)) + body)


LONG = r.range(10**10).count()
s = raw_connect()
send(s, 1, [1, LONG, {}])
time.sleep(0.2)
send(s, 1, [3])
got = read_response(s, 1.0)
check(got is not None and got[0] == 1 and got[1]["t"] == 2,
      "raw: STOP of a running query answered SUCCESS_SEQUENCE within 1 s", got)
got = read_response(s, 0.5)
check(got is None, "raw: nothing more for the stopped token", got)
send(s, 2, [1, r.expr(1), {}])
got = read_response(s, 10)
check(got is not None and got[0] == 2 and got[1]["t"] == 1 and got[1]["r"] == [1],
      "raw: the connection serves the next query", got)

send(s, 5, [1, LONG, {}])
send(s, 5, [1, LONG, {}])
got = read_response(s, 10)
# RethinkDB's answer: CLIENT_ERROR (16) of type QUERY_LOGIC (3000000), empty backtrace.
check(got == (5, {"t": 16, "e": 3000000, "r": ["ERROR: duplicate token 5"], "b": []}),
      "raw: a START reusing a running token gets CLIENT_ERROR", got)
send(s, 5, [3])
got = read_response(s, 1.0)
check(got is not None and got[0] == 5 and got[1]["t"] == 2,
      "raw: STOP of the first query with that token", got)
got = read_response(s, 0.5)
check(got is None, "raw: nothing more for token 5", got)


def send_raw(s, token, body):
    s.sendall(struct.pack("<QI", token, len(body)) + body)


# Terms nested tens of thousands deep, sent as raw JSON (drivers cannot build them: their
# own encoders recurse). RethinkDB answers them; so must we.
deep_add = "1"
for _ in range(20000):
    deep_add = "[24,[" + deep_add + ",1]]"  # ADD
send_raw(s, 6, ("[1," + deep_add + ",{}]").encode())
got = read_response(s, 30)
check(got == (6, {"t": 1, "r": [20001]}), "raw: 20,000 nested ADD terms answered", got)
deep_arr = "1"
for _ in range(30000):
    deep_arr = "[2,[" + deep_arr + "]]"  # MAKE_ARRAY
send_raw(s, 7, ("[1,[43,[[172,[" + deep_arr + "]]]],{}]").encode())  # COUNT(TO_JSON_STRING)
got = read_response(s, 30)
check(got == (7, {"t": 1, "r": [60001]}), "raw: a 30,000-deep array literal answered", got)
send_raw(s, 8, b"[1," + b"[" * 200000 + b"]" * 200000 + b",{}]")
got = read_response(s, 30)
check(got is not None and got[0] == 8 and got[1]["t"] == 16
      and "nested too deeply" in got[1]["r"][0], "raw: JSON 200,000 deep refused", got)
send(s, 9, [1, r.expr(1), {}])
got = read_response(s, 10)
check(got == (9, {"t": 1, "r": [1]}), "raw: the connection serves the next query", got)
s.close()
alive("STOP of running queries")
c.close()
print("hostile query checks passed")
