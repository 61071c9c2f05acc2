#!/usr/bin/env python3
"""Hostile connections against a running rdb: handshakes that never finish, a huge length
prefix, invalid UTF-8, a client that pipelines queries and never reads, thousands of idle
connections, oversized documents and keys. The server must keep serving other clients,
hold its memory and file descriptors, and not flood its log.

usage: hostile_connections.py PORT SERVER_PID LOG_FILE
Exits non-zero with a message on the first failed check; prints one line per check.

The crowds (a, e) come from the loopback addresses 127.0.0.2-127.0.0.9, 500 connections
from each, so they stay under the default per-address cap (1024) and reach the code under
test instead of being refused at accept; the well-behaved client connects from 127.0.0.1.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import threading
import time

from rethinkdb import r

PORT = int(sys.argv[1])
SERVER_PID = int(sys.argv[2])
LOG_FILE = sys.argv[3]
V1_0 = 0x34C2BDC3
CROWD = 2000


def check(cond, what, got=None):
    if not cond:
        sys.exit("FAILED: %s (got %r)" % (what, got))
    print("ok -", what, flush=True)


def log_lines():
    with open(LOG_FILE, "rb") as f:
        return f.read().count(b"\n")


def server_fds():
    return len(os.listdir("/proc/%d/fd" % SERVER_PID))


def server_rss_mib():
    with open("/proc/%d/status" % SERVER_PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    sys.exit("FAILED: no VmRSS in /proc/%d/status" % SERVER_PID)


_create_connection = socket.create_connection


def connect(src=None):
    """A driver connection, from the loopback address `src` if given."""
    if src is None:
        return r.connect("127.0.0.1", PORT, user="admin", password="", timeout=20)

    # The driver has no source-address option: lend it a create_connection that binds.
    def bound(addr, timeout=None, source_address=None, *rest, **kw):
        return _create_connection(addr, timeout, (src, 0))

    socket.create_connection = bound
    try:
        return r.connect("127.0.0.1", PORT, user="admin", password="", timeout=20)
    finally:
        socket.create_connection = _create_connection


def answers_quickly(what, limit=2.0):
    """A fresh driver connection from 127.0.0.1 connects and answers within `limit` s."""
    start = time.time()
    c = connect()
    got = r.expr(1).run(c)
    took = time.time() - start
    c.close()
    check(got == 1 and took < limit, "%s: a new connection answers r.expr(1) in %.2f s"
          % (what, took), (got, took))


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
    """A connection through the V1_0 + SCRAM-SHA-256 handshake, ready for query frames."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=admin,r=" + nonce
    s.sendall(struct.pack("<I", V1_0) + json.dumps({
        "protocol_version": 0, "authentication_method": "SCRAM-SHA-256",
        "authentication": "n,," + bare}).encode() + b"\0")
    if not read_nul(s)["success"]:
        sys.exit("FAILED: raw handshake: no server hello")
    first = read_nul(s)["authentication"]
    attrs = dict(kv.split("=", 1) for kv in first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", b"", base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join([bare, first, without_proof]).encode()
    sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    s.sendall(json.dumps({"authentication": without_proof + ",p="
                          + base64.b64encode(proof).decode()}).encode() + b"\0")
    if not read_nul(s)["success"]:
        sys.exit("FAILED: raw handshake: not authenticated")
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def read_response(s):
    token, length = struct.unpack("<QI", recv_exact(s, 12))
    return token, json.loads(recv_exact(s, length))


def frame(token, body):
    return struct.pack("<QI", token, len(body)) + body


def closed_by_server(s, wait):
    """Whether the server has closed `s` (EOF or reset) within `wait` seconds; any bytes
    it sent first are skipped."""
    s.settimeout(wait)
    try:
        while True:
            if not s.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


# Two crowds of 2000 sockets, plus the driver's own: raise our descriptor limit.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = CROWD + 1000
if soft < want:
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit("FAILED: this test needs %d file descriptors, the hard limit is %d" % (want, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

script_start = time.time()
log_start = log_lines()

# --- a. slow handshakes --------------------------------------------------------------
# Each sends the first byte of the magic number and then nothing: without a handshake
# deadline every one would hold a server socket (and descriptor) for ever.
fds_before = server_fds()
slow = []
start = time.time()
for i in range(CROWD):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.%d" % (2 + i % 4), 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", PORT))
    s.sendall(struct.pack("<I", V1_0)[:1])
    slow.append(s)
last_sent = time.time()
print("   %d slow handshakes opened in %.1f s; server fds %d -> %d"
      % (CROWD, last_sent - start, fds_before, server_fds()), flush=True)
answers_quickly("slow handshakes")
# The deadline is 10 s; give it 2 s more from the last connection opened.
time.sleep(max(0.0, last_sent + 12 - time.time()))
sample = random.sample(slow, 100)
still_open = sum(1 for s in sample if not closed_by_server(s, 0.05))
check(still_open == 0, "slow handshakes: all of 100 sampled closed by the server after 12 s",
      "%d still open" % still_open)
fds_after = server_fds()
check(fds_after <= fds_before + 50, "slow handshakes: server fds back to %d (%d before)"
      % (fds_after, fds_before), fds_after)
for s in slow:
    s.close()
del slow

# --- b. huge length prefix -----------------------------------------------------------
# The server must refuse the size before allocating or waiting for the body.
for size in (0xFFFFFFFF, 128 * 1024 * 1024):
    s = raw_connect()
    s.sendall(struct.pack("<QI", 1, size))
    tok, resp = read_response(s)
    want = ["Query size (%d) greater than maximum (134217727)." % size]
    check(tok == 1 and resp.get("t") == 16 and resp.get("r") == want,
          "length prefix %d: CLIENT_ERROR %r" % (size, want[0]), (tok, resp))
    check(closed_by_server(s, 5), "length prefix %d: then the connection is closed" % size)
    s.close()
answers_quickly("huge length prefix")

# --- c. invalid UTF-8 in a query -----------------------------------------------------
s = raw_connect()
s.sendall(frame(1, b'[1,"\xff\xfe"]'))
tok, resp = read_response(s)
check(tok == 1 and resp.get("t") == 16
      and resp.get("r") == ["Client is buggy (failed to deserialize query)."],
      "invalid UTF-8: CLIENT_ERROR 'Client is buggy (failed to deserialize query).'", (tok, resp))
s.sendall(frame(2, b"[1,1,{}]"))
tok, resp = read_response(s)
check(tok == 2 and resp.get("t") == 1 and resp.get("r") == [1],
      "invalid UTF-8: the same connection then answers r.expr(1)", (tok, resp))
s.close()

# --- d. pipelined queries never read -------------------------------------------------
# 100,000 queries of r.expr('x' * 1000) (about 100 MB of answers) and no reads: the
# server must stop reading when its answers cannot be written, not buffer them all.
PIPELINED = 100000
body = json.dumps([1, "x" * 1000, {}]).encode()
flood = raw_connect()
flood.settimeout(None)
sent = [0]


def send_flood():
    try:
        for base in range(0, PIPELINED, 1000):
            flood.sendall(b"".join(frame(base + i + 1, body) for i in range(1000)))
            sent[0] = base + 1000
    except OSError:
        pass  # the socket is shut down under us: expected when the buffers are full


sender = threading.Thread(target=send_flood, daemon=True)
sender.start()
rss_max = server_rss_mib()
flood_start = time.time()
checked = False
while time.time() - flood_start < 10:
    time.sleep(0.25)
    rss_max = max(rss_max, server_rss_mib())
    if not checked and time.time() - flood_start > 2:
        answers_quickly("pipelined flood")
        checked = True
flood.shutdown(socket.SHUT_RDWR)  # wakes the sender blocked in sendall
sender.join(10)
flood.close()
check(not sender.is_alive(), "pipelined flood: the sender stopped after its socket was shut")
print("   %d of %d queries sent in 10 s" % (sent[0], PIPELINED), flush=True)
rss_max = max(rss_max, server_rss_mib())
check(rss_max < 1536, "pipelined flood: server RSS peaked at %.0f MiB (< 1536)" % rss_max, rss_max)
answers_quickly("after the pipelined flood")

# --- e. many idle connections --------------------------------------------------------
idle = []
start = time.time()
for i in range(CROWD):
    idle.append(connect("127.0.0.%d" % (6 + i % 4)))
first_opened = start
print("   %d authenticated connections opened in %.1f s" % (CROWD, time.time() - start),
      flush=True)
answers_quickly("%d idle connections" % CROWD)
# An authenticated connection idle past the 10 s handshake deadline must not be cut.
time.sleep(max(0.0, first_opened + 11 - time.time()))
got = r.expr(1).run(idle[0])
check(got == 1, "idle connections: the first, idle for %.0f s, still answers"
      % (time.time() - first_opened), got)
for c in idle:
    c.close(noreply_wait=False)
del idle
answers_quickly("after closing the idle connections")

# --- f. oversized document and primary key ------------------------------------------
c = connect()
if "test" not in r.db_list().run(c):
    r.db_create("test").run(c)
if "big" in r.db("test").table_list().run(c):
    r.db("test").table_drop("big").run(c)
r.db("test").table_create("big").run(c)
t = r.db("test").table("big")
res = t.insert({"id": 1, "s": "x" * (17 * 1024 * 1024)}).run(c)
check(res.get("errors") == 1 and res.get("inserted") == 0
      and res.get("first_error", "").startswith("Document too large to store"),
      "17 MiB document refused: %r" % res.get("first_error", "")[:80], {k: str(v)[:100] for k, v in res.items()})
res = t.insert({"id": "k" * 200000}).run(c)
err = res.get("first_error", "")
check(res.get("errors") == 1 and res.get("inserted") == 0
      and err.startswith("Primary key too long (max 127 characters): "),
      "200,000-character key refused: %r" % err[:60], {k: str(v)[:100] for k, v in res.items()})
echoed = err[len("Primary key too long (max 127 characters): "):].encode()
check(len(err) < 5000 and len(echoed) <= 4096 and echoed.startswith(b'"' + b"k" * 4000)
      and echoed.endswith(b"..."),
      "200,000-character key: the message echoes it cut to %d bytes ending %r"
      % (len(echoed), echoed[-6:].decode()), (len(err), err[-20:]))
# The limit is RethinkDB's: 127 bytes of key.
res = t.insert([{"id": "a" * 127}, {"id": "b" * 128}]).run(c)
check(res.get("inserted") == 1 and res.get("errors") == 1
      and res.get("first_error", "").startswith("Primary key too long"),
      "a 127-character key is stored, a 128-character one refused", res)
res = t.get("a" * 127).delete().run(c)
check(res.get("deleted") == 1, "the 127-character key reads back", res)
res = t.insert({"id": 2}).run(c)
check(res.get("inserted") == 1, "the table still takes a document", res)
check(t.count().run(c) == 1, "the table holds only the small document")
r.db("test").table_drop("big").run(c)
c.close()

# --- g. the log stayed small ---------------------------------------------------------
# Past the per-address cap (1024 by default) every connection is refused: 476 refusals
# here, which must make one log line, not one each.
over = []
for i in range(1500):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.10", 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", PORT))
    over.append(s)
# Which ones are refused depends on the order the cores accept them in: count them.
poller = select.poll()
by_fd = {s.fileno(): s for s in over}
for fd in by_fd:
    poller.register(fd, select.POLLIN)
closed = set()
deadline = time.time() + 3
while time.time() < deadline:
    for fd, _ in poller.poll(100):
        if fd not in closed and closed_by_server(by_fd[fd], 0.01):
            closed.add(fd)
            poller.unregister(fd)
check(len(closed) == 476, "1500 connections from one address: 476 closed at once, "
      "1024 left open", "%d closed" % len(closed))
for s in over:
    s.close()
del over
answers_quickly("after the refusals")
with open(LOG_FILE, errors="replace") as f:
    refusal_lines = f.read().count("refused a connection from 127.0.0.10")
check(1 <= refusal_lines <= 2, "the 476 refusals made %d log line(s)" % refusal_lines,
      refusal_lines)
grown = log_lines() - log_start
check(grown <= 200, "log grew by %d lines (<= 200)" % grown, grown)
print("hostile connection checks passed in %.0f s" % (time.time() - script_start))
