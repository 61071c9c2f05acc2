"""r.js limits through the official Python driver.

usage: js_check.py PORT enabled|disabled
"""

import sys
import threading
import time

from rethinkdb import r
from rethinkdb.errors import ReqlQueryLogicError


def expect_error(query, c, fragment):
    try:
        query.run(c)
    except ReqlQueryLogicError as e:
        assert fragment in str(e), (fragment, str(e))
        return str(e)
    raise AssertionError("no error for %r" % query)


def enabled(port):
    c = r.connect("127.0.0.1", port)
    assert r.js("1 + 1").run(c) == 2
    assert r.expr([1, 2, 3]).map(r.js("(function(x) { return x * 10; })")).run(c) == [10, 20, 30]
    # No file, network or module access: none of QuickJS's libc layer is there.
    assert r.js("typeof require + typeof std + typeof os + typeof fetch").run(c) == "undefinedundefinedundefinedundefined"

    # A runaway script is stopped at its timeout, and other queries keep being answered
    # meanwhile (on the same core and on others).
    other = r.connect("127.0.0.1", port)
    result = {}

    def runaway():
        started = time.time()
        result["error"] = expect_error(r.js("while(true) {}", timeout=2), c, "timed out after 2.000 seconds")
        result["seconds"] = time.time() - started

    t = threading.Thread(target=runaway)
    t.start()
    time.sleep(0.2)
    latencies = []
    while t.is_alive():
        started = time.time()
        assert r.expr(1).add(1).run(other) == 2
        assert r.js("6 * 7", timeout=1).run(other) == 42
        latencies.append(time.time() - started)
    t.join()
    assert 1.9 <= result["seconds"] < 4, result
    assert len(latencies) > 20, len(latencies)
    assert max(latencies) < 0.5, max(latencies)

    # A script that allocates without end hits the memory limit; the next one runs.
    expect_error(
        r.js("var a = []; while (true) { a.push(new Array(100000).fill(7)); }", timeout=30),
        c,
        "ran out of memory",
    )
    # Deep recursion fails cleanly too.
    expect_error(r.js("(function f(n) { return f(n + 1) + 1; })(0)"), c, "RangeError")
    assert r.js("[1, 'a', null, {b: true}]").run(c) == [1, "a", None, {"b": True}]
    print("js enabled: ok (%d queries answered during the runaway script, slowest %.3f s)"
          % (len(latencies), max(latencies)))


def disabled(port):
    c = r.connect("127.0.0.1", port)
    expect_error(r.js("1"), c, "--enable-js")
    print("js disabled: ok")


if __name__ == "__main__":
    port = int(sys.argv[1])
    {"enabled": enabled, "disabled": disabled}[sys.argv[2]](port)
