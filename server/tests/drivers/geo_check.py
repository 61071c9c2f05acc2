"""Geospatial indexes through the official Python driver, checked against brute force.

usage: geo_check.py PORT setup|mutate|check|feed

setup   creates test.geo with a point index, a multi index and a polygon index and
        fills it with random points, polygons and point lists;
mutate  moves, replaces and deletes documents (the index must follow);
check   compares get_intersecting and get_nearest with filter(intersects) and with
        distances computed document by document;
feed    checks that a changefeed on get_intersecting follows only matching geometries.
"""

import random
import sys

from rethinkdb import r

N_DOCS = 600


def conn(port):
    return r.connect("127.0.0.1", int(port))


def rand_point(rng):
    # Spread over a region small enough for get_nearest's default max_dist to matter.
    return [rng.uniform(-10, 10), rng.uniform(40, 50)]


def rand_polygon(rng):
    lon, lat = rand_point(rng)
    return r.circle([lon, lat], rng.uniform(1000, 200000), num_vertices=rng.choice([4, 8, 16]))


def doc(rng, i):
    return {
        "id": i,
        "loc": r.point(*rand_point(rng)),
        "area": rand_polygon(rng),
        "stops": [r.point(*rand_point(rng)) for _ in range(rng.randint(0, 3))],
    }


def setup(c):
    if "geo" in r.db("test").table_list().run(c):
        r.db("test").table_drop("geo").run(c)
    r.db("test").table_create("geo").run(c)
    t = r.db("test").table("geo")
    rng = random.Random(7)
    t.insert([doc(rng, i) for i in range(N_DOCS // 2)]).run(c)
    # Half the documents exist before the indexes (built in the background), half after.
    t.index_create("loc", geo=True).run(c)
    t.index_create("area", geo=True).run(c)
    t.index_create("stops", geo=True, multi=True).run(c)
    t.insert([doc(rng, i) for i in range(N_DOCS // 2, N_DOCS)]).run(c)
    t.index_wait().run(c)
    print("setup: ok")


def mutate(c):
    t = r.db("test").table("geo")
    rng = random.Random(11)
    for i in range(0, N_DOCS, 3):
        t.get(i).update({"loc": r.point(*rand_point(rng))}).run(c)
    for i in range(1, N_DOCS, 5):
        t.get(i).replace(doc(rng, i)).run(c)
    for i in range(2, N_DOCS, 7):
        t.get(i).delete().run(c)
    print("mutate: ok")


def check(c):
    t = r.db("test").table("geo")
    rng = random.Random(13)
    queries = 0
    for _ in range(25):
        q = rand_polygon(rng) if rng.random() < 0.7 else r.line(rand_point(rng), rand_point(rng))
        for field, multi in (("loc", False), ("area", False), ("stops", True)):
            got = sorted(d["id"] for d in t.get_intersecting(q, index=field).run(c))
            if multi:
                # Once per matching element, as RethinkDB emits them.
                want = sorted(
                    d["id"]
                    for d in t.concat_map(
                        lambda row: row["stops"].filter(lambda s: s.intersects(q)).map(
                            lambda _: {"id": row["id"]}
                        )
                    ).run(c)
                )
            else:
                want = sorted(d["id"] for d in t.filter(lambda row: row[field].intersects(q)).run(c))
            assert got == want, (field, got, want)
            queries += 1
    for _ in range(15):
        center = rand_point(rng)
        max_dist = rng.choice([20000, 100000, 400000])
        limit = rng.choice([1, 5, 50])
        got = t.get_nearest(r.point(*center), index="loc", max_dist=max_dist, max_results=limit).run(c)
        dists = sorted(
            (d["dist"], d["id"])
            for d in t.map(lambda row: {"id": row["id"], "dist": row["loc"].distance(r.point(*center))}).run(c)
            if d["dist"] <= max_dist
        )[:limit]
        assert [g["doc"]["id"] for g in got] == [i for _, i in dists], (got, dists)
        assert [g["dist"] for g in got] == [d for d, _ in dists]
        queries += 1
    print("check: ok (%d queries)" % queries)


def feed(c):
    """`get_intersecting(...).changes()` follows only the geometries meeting the query."""
    t = r.db("test").table("geo")
    area = r.circle([0, 45], 50000)
    f = t.get_intersecting(area, index="loc").changes().run(c)
    t.insert({"id": 10000, "loc": r.point(100, -45), "area": rand_polygon(random.Random(1)), "stops": []}).run(c)
    t.insert({"id": 10001, "loc": r.point(0.1, 45), "area": rand_polygon(random.Random(2)), "stops": []}).run(c)
    t.get(10001).update({"loc": r.point(100, 45)}).run(c)
    first = next(f)
    second = next(f)
    assert first["new_val"]["id"] == 10001 and first["old_val"] is None, first
    assert second["new_val"] is None and second["old_val"]["id"] == 10001, second
    print("feed: ok")


if __name__ == "__main__":
    port, what = sys.argv[1], sys.argv[2]
    c = conn(port)
    {"setup": setup, "mutate": mutate, "check": check, "feed": feed}[what](c)
