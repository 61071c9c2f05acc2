"""Point reads through the official Python driver: the plain `table.get(key)`, which the
server answers straight from the stored bytes, must give exactly what the evaluator
gives for the same read (`get(key).do(lambda d: d)` always goes through it), for
documents of every shape, missing keys, other databases, and every error.

usage: point_get.py PORT PASSWORD
"""

import datetime
import random
import sys

from rethinkdb import r
from rethinkdb.errors import ReqlOpFailedError, ReqlQueryLogicError


def check(c, query, evaluated):
    """The fast answer, the evaluator's answer and the raw JSON of both must agree."""
    fast = query.run(c)
    slow = evaluated.run(c)
    assert fast == slow, (fast, slow)
    fast_raw = query.run(c, time_format="raw", binary_format="raw")
    slow_raw = evaluated.run(c, time_format="raw", binary_format="raw")
    assert fast_raw == slow_raw, (fast_raw, slow_raw)
    return fast


def same_error(c, query, evaluated):
    errors = []
    for q in (query, evaluated):
        try:
            q.run(c)
        except (ReqlOpFailedError, ReqlQueryLogicError) as e:
            errors.append((type(e), e.message))
        else:
            raise AssertionError("expected an error from %r" % q)
    assert errors[0] == errors[1], errors


def main():
    c = r.connect("127.0.0.1", int(sys.argv[1]), password=sys.argv[2])
    if "pg" in r.db_list().run(c):
        r.db_drop("pg").run(c)
    r.db_create("pg").run(c)
    r.db("pg").table_create("t").run(c)
    r.db("pg").table_create("s", primary_key="name").run(c)
    t = r.db("pg").table("t")
    rng = random.Random(7)
    docs = [
        {"id": 1, "v": 2, "pad": "x" * 40},
        {"id": "str", "nested": {"a": [1, 2.5, -0.0, 1e300, None, True, False]}},
        {"id": 2.5, "unicode": "caf\u00e9 \u2603 \U0001f600", "esc": "quote\" back\\ nl\n tab\t \x01"},
        {"id": -7, "when": r.time(2024, 2, 29, 12, 30, 15.25, "+02:00"), "bin": r.binary(bytes(range(256)))},
        {"id": [1, "a"], "big": 2**53, "neg": -(2**53), "small": 5e-324},
        {"id": "empty", "o": {}, "a": [], "s": ""},
        {"id": "deep", "d": {"a": {"b": {"c": {"d": [[[{"e": 1}]]]}}}}},
    ]
    for i in range(200):
        docs.append(
            {
                "id": 1000 + i,
                "f": rng.random() * 10 ** rng.randint(-5, 20),
                "s": "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 12))),
                "k": {str(rng.randint(0, 99)): rng.randint(-(10**9), 10**9) for _ in range(4)},
            }
        )
    res = t.insert(docs).run(c)
    assert res["inserted"] == len(docs), res
    for d in docs:
        key = d["id"]
        got = check(c, t.get(key), t.get(key).do(lambda x: x))
        assert got is not None and got["id"] == key, got
    # Missing keys, through the default database too.
    assert check(c, t.get("nope"), t.get("nope").do(lambda x: x)) is None
    if "pg_default" not in r.db("test").table_list().run(c):
        r.db("test").table_create("pg_default").run(c)
    r.table("pg_default").insert({"id": 1, "x": "y"}).run(c)
    check(c, r.table("pg_default").get(1), r.table("pg_default").get(1).do(lambda x: x))
    # The db global optional argument names the default database.
    got = r.table("t").get(1).run(c, db="pg")
    assert got == t.get(1).do(lambda x: x).run(c), got
    # A primary key other than id.
    r.db("pg").table("s").insert({"name": "ada", "n": 1}).run(c)
    assert check(c, r.db("pg").table("s").get("ada"), r.db("pg").table("s").get("ada").do(lambda x: x)) == {
        "name": "ada",
        "n": 1,
    }
    # Errors are the evaluator's.
    same_error(c, r.db("pg").table("missing").get(1), r.db("pg").table("missing").get(1).do(lambda x: x))
    same_error(c, r.db("nodb").table("t").get(1), r.db("nodb").table("t").get(1).do(lambda x: x))
    same_error(c, t.get(None), t.get(None).do(lambda x: x))
    same_error(c, t.get("k" * 200), t.get("k" * 200).do(lambda x: x))
    same_error(c, r.db("pg").table("bad name").get(1), r.db("pg").table("bad name").get(1).do(lambda x: x))
    # System tables are computed: answered by the evaluator.
    got = r.db("rethinkdb").table("db_config").get(r.db("pg").config()["id"]).run(c)
    assert got["name"] == "pg", got
    # A time read back is a datetime in the document's timezone.
    when = t.get(-7).run(c)["when"]
    assert when == datetime.datetime(2024, 2, 29, 12, 30, 15, 250000, tzinfo=when.tzinfo), when
    assert when.utcoffset() == datetime.timedelta(hours=2), when
    r.db_drop("pg").run(c)
    r.db("test").table_drop("pg_default").run(c)
    print("point reads ok")


if __name__ == "__main__":
    main()
