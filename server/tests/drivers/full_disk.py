"""A full disk stops writes, frees up, and writes come back without a restart.

Usage: full_disk.py PORT MOUNT_DIR. The server's data directory is on MOUNT_DIR, a
small file system the test made; this script fills it with a file, checks that writes
fail (and that every acknowledged one survives), frees the space, and expects writes
to be accepted again within 20 s.
"""
import os
import sys
import time

from rethinkdb import r

port, mount = int(sys.argv[1]), sys.argv[2]
c = r.connect(port=port)
r.db("test").table_create("t").run(c)
r.table("t").insert({"id": "before"}).run(c, durability="hard")

filler_path = os.path.join(mount, "filler")
filler = open(filler_path, "wb")
try:
    while True:
        filler.write(b"x" * (1 << 20))
except OSError:
    pass

acked, refused = ["before"], 0
for i in range(200):
    try:
        r.table("t").insert({"id": i, "pad": "y" * 20000}).run(c, durability="hard")
        acked.append(i)
    except r.ReqlError:
        refused += 1
assert refused > 0, "a full disk refused no write"
print(f"disk full: {len(acked)} writes acknowledged, {refused} refused")

try:
    filler.close()
except OSError:
    pass
os.remove(filler_path)

start = time.time()
while True:
    try:
        res = r.table("t").insert({"id": "after"}).run(c, durability="hard")
        assert res["inserted"] == 1, res
        break
    except r.ReqlError as e:
        if time.time() - start > 20:
            raise SystemExit(f"writes still refused 20 s after space was freed: {e}")
        time.sleep(0.2)
print(f"writes accepted again {time.time() - start:.1f} s after space was freed")

have = set(r.table("t")["id"].coerce_to("array").run(c))
lost = [k for k in acked if k not in have]
assert not lost, f"acknowledged writes lost: {lost}"
assert "after" in have
res = r.table("t").get("before").delete().run(c, durability="hard")
assert res["deleted"] == 1, res
print("deletes work again; no acknowledged write lost")
