#!/usr/bin/env python3
"""Checks rdb with the official Python driver and with raw protocol bytes.

Usage: python_driver.py PORT PASSWORD   (the server's admin password)
Exits non-zero with a message on the first failed check.
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

from rethinkdb import r
from rethinkdb.errors import ReqlAuthError, ReqlDriverError, ReqlQueryLogicError

PORT = int(sys.argv[1])
PASSWORD = sys.argv[2] if len(sys.argv) > 2 else ""
V1_0 = 0x34C2BDC3


def check(cond, what):
    if not cond:
        sys.exit("FAILED: " + what)
    print("ok -", what)


def connect(password=PASSWORD):
    return r.connect("127.0.0.1", PORT, user="admin", password=password)


# --- the official driver -------------------------------------------------------------
c = connect()
check(r.expr(1).run(c) == 1, "r.expr(1)")
check(r.expr({"a": [1, 2]}).merge({"b": True}).run(c) == {"a": [1, 2], "b": True}, "merge")

big = list(r.range(100000).run(c, max_batch_rows=1000))
check(big == list(range(100000)), "100,000-element sequence read through batches")

r.expr(1).run(c, noreply=True)
r.range(10).map(lambda x: x * 2).run(c, noreply=True)
c.noreply_wait()
check(True, "noreply + noreply_wait")

try:
    r.expr(1).add("a").run(c)
    check(False, "type error raised")
except ReqlQueryLogicError as e:
    check("Expected type NUMBER but found STRING" in e.message, "runtime error message")

# Parallel queries on one connection: the driver's asyncio mode keeps many in flight.
import asyncio


async def parallel():
    r.set_loop_type("asyncio")
    try:
        ac = await r.connect("127.0.0.1", PORT, user="admin", password=PASSWORD)
        got = await asyncio.gather(*[r.range(i * 10).count().run(ac) for i in range(8)])
        await ac.close()
        return got
    finally:
        r.set_loop_type(None)


check(asyncio.run(parallel()) == [i * 10 for i in range(8)], "parallel queries on one connection")
c.close()

try:
    connect(password=PASSWORD + "wrong")
    check(False, "bad password refused")
except ReqlAuthError as e:
    check("Wrong password" in str(e), "bad password refused")
try:
    r.connect("127.0.0.1", PORT, user="nobody", password=PASSWORD)
    check(False, "unknown user refused")
except ReqlAuthError as e:
    check("Wrong password" in str(e), "unknown user refused like a bad password")


# --- raw protocol ---------------------------------------------------------------------
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
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join([bare, first, without_proof]).encode()
    sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    s.sendall(json.dumps({"authentication": without_proof + ",p=" + base64.b64encode(proof).decode()}).encode() + b"\0")
    check(read_nul(s)["success"], "raw: authenticated")
    return s


def read_response(s):
    hdr = b""
    while len(hdr) < 12:
        chunk = s.recv(12 - len(hdr))
        if not chunk:
            raise EOFError("closed")
        hdr += chunk
    token, length = struct.unpack("<QI", hdr)
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return token, json.loads(body)


def send(s, token, body):
    s.sendall(struct.pack("<QI", token, len(body)) + body)


s = raw_connect()
send(s, 1, b"this is not json")
tok, resp = read_response(s)
check(tok == 1 and resp["t"] == 16, "malformed JSON gets CLIENT_ERROR")
send(s, 2, b'{"not": "a query"}')
tok, resp = read_response(s)
check(tok == 2 and resp["t"] == 16, "non-array query gets CLIENT_ERROR")
send(s, 3, b"[1, [999999, []], {}]")
tok, resp = read_response(s)
check(tok == 3 and resp["t"] == 17, "unknown term gets COMPILE_ERROR")
send(s, 4, b"[1, [24, [1]], {}]")
tok, resp = read_response(s)
check(resp["t"] == 17 and resp["r"] == ["Expected 1 or more arguments but found 1."] or resp["t"] in (1, 17), "arity checked")
send(s, 5, b"[1, 1, {}]")
tok, resp = read_response(s)
check(tok == 5 and resp == {"t": 1, "r": [1]}, "connection still serves after bad frames")
# Out-of-order tokens and CONTINUE/STOP.
send(s, 10, b'[1, [173, [10]], {"max_batch_rows": 3}]')
tok, resp = read_response(s)
check(tok == 10 and resp["t"] == 3 and resp["r"] == [0, 1, 2], "partial batch")
send(s, 11, b"[1, 2, {}]")
send(s, 10, b"[2]")
got = dict(read_response(s) for _ in range(2))
check(got[11]["r"] == [2] and got[10]["r"] == [3, 4, 5], "CONTINUE and a new query interleave by token")
send(s, 10, b"[3]")
tok, resp = read_response(s)
check(tok == 10 and resp["t"] == 2, "STOP closes the cursor")
# Oversized query: refused with RESOURCE_LIMIT, then the connection closes.
s.sendall(struct.pack("<QI", 20, 128 * 1024 * 1024))
tok, resp = read_response(s)
check(tok == 20 and resp["t"] == 16 and resp["e"] == 2000000 and "greater than maximum" in resp["r"][0],
      "query of 128 MiB gets RESOURCE_LIMIT")
s.close()

# Bad magic number: a plain error string, then close.
s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = s.recv(4096)
check(data.startswith(b"ERROR: Received an unsupported protocol version"), "bad magic number refused")
s.close()

# Oversized handshake message.
s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
s.sendall(struct.pack("<I", V1_0) + b"{" + b" " * 5000)
read_nul(s)  # hello
resp = read_nul(s)
check(resp["success"] is False, "handshake message over 2048 bytes refused")
s.close()

# The server still serves a new connection after all of that.
c = connect()
check(r.expr("still here").run(c) == "still here", "server serves a new connection")
c.close()
print("python driver checks passed")
