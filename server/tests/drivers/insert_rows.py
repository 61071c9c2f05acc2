"""Inserts through the official Python driver where the row turns out to exist. The server
computes an inserted row as if absent and writes it only if it still is; any other
outcome must read the row and compute it again, so conflicts, write hooks that look at
the old row, and rows repeated within one insert all see the real stored row.

usage: insert_rows.py PORT PASSWORD
"""

import sys

from rethinkdb import r


def main():
    c = r.connect("127.0.0.1", int(sys.argv[1]), password=sys.argv[2])
    if "ins" in r.db_list().run(c):
        r.db_drop("ins").run(c)
    r.db_create("ins").run(c)
    r.db("ins").table_create("t").run(c)
    t = r.db("ins").table("t")
    t.insert([{"id": i, "v": i} for i in range(100)]).run(c)

    # Conflicts: error, replace, update and a function, each against a stored row.
    res = t.insert({"id": 5, "w": 1}).run(c)
    assert res["errors"] == 1 and res["inserted"] == 0, res
    assert res["first_error"].startswith("Duplicate primary key `id`:"), res
    assert '"v":\t5' in res["first_error"], res["first_error"]
    res = t.insert({"id": 6, "w": 1}, conflict="replace", return_changes=True).run(c)
    assert res["replaced"] == 1, res
    assert res["changes"] == [{"old_val": {"id": 6, "v": 6}, "new_val": {"id": 6, "w": 1}}], res
    res = t.insert({"id": 7, "w": 1}, conflict="update").run(c)
    assert res["replaced"] == 1 and t.get(7).run(c) == {"id": 7, "v": 7, "w": 1}, res
    res = t.insert(
        {"id": 8, "v": 100}, conflict=lambda _id, old, new: old.merge({"v": old["v"] + new["v"]})
    ).run(c)
    assert res["replaced"] == 1 and t.get(8).run(c) == {"id": 8, "v": 108}, res
    # The same row as stored: unchanged, not replaced.
    res = t.insert({"id": 9, "v": 9}, conflict="replace").run(c)
    assert res["unchanged"] == 1 and res["replaced"] == 0, res

    # One insert of many rows: new ones, stored ones, and a key given twice (the second
    # copy conflicts with the first).
    rows = [{"id": 1000 + i} for i in range(50)] + [{"id": 10}, {"id": 2000}, {"id": 2000}]
    res = t.insert(rows).run(c)
    assert res["inserted"] == 51 and res["errors"] == 2, res
    res = t.insert(rows, conflict="replace").run(c)
    assert res["replaced"] == 1 and res["unchanged"] == 52, res
    assert t.get(10).run(c) == {"id": 10}

    # A write hook that refuses inserts but lets replacements through: computed as an
    # insert (absent), the hook fails; the stored row must decide.
    r.db("ins").table_create("h").run(c)
    h = r.db("ins").table("h")
    h.insert({"id": 1, "n": 0}).run(c)
    h.set_write_hook(
        lambda ctx, old, new: r.branch(old.eq(None), r.error("inserts refused"), new)
    ).run(c)
    res = h.insert({"id": 1, "n": 1}, conflict="replace").run(c)
    assert res["replaced"] == 1 and res["errors"] == 0, res
    res = h.insert({"id": 2, "n": 1}).run(c)
    assert res["errors"] == 1 and "inserts refused" in res["first_error"], res
    assert h.get(2).run(c) is None
    # A hook that keeps stored rows as they are: unchanged once the row is read.
    h.set_write_hook(lambda ctx, old, new: r.branch(old.eq(None), new, old)).run(c)
    res = h.insert([{"id": 1, "n": 5}, {"id": 3, "n": 5}], conflict="replace").run(c)
    assert res["unchanged"] == 1 and res["inserted"] == 1, res
    assert h.get(1).run(c) == {"id": 1, "n": 1}

    r.db_drop("ins").run(c)
    print("ok")


if __name__ == "__main__":
    main()
