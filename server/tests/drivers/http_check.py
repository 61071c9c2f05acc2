"""r.http through the official Python driver, against a local HTTP server started here.

usage: http_check.py PORT allowed|guarded|disabled

allowed   the server runs with --enable-http --http-allow-private: every option is
          exercised against the local server;
guarded   --enable-http only: loopback, private and metadata addresses are refused;
disabled  no flag: r.http is refused.
"""

import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from rethinkdb import r
from rethinkdb.errors import ReqlNonExistenceError, ReqlQueryLogicError

FLAKY = {"count": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", extra=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def echo(self):
        u = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        self.send(200, json.dumps({
            "method": self.command,
            "path": u.path,
            "query": {k: v[0] for k, v in parse_qs(u.query).items()},
            "body": body,
            "content_type": self.headers.get("Content-Type"),
            "x_test": self.headers.get("X-Test"),
            "auth": self.headers.get("Authorization"),
        }))

    def route(self):
        u = urlparse(self.path)
        if u.path == "/echo":
            return self.echo()
        if u.path == "/text":
            return self.send(200, "plain words", "text/plain")
        if u.path == "/bytes":
            return self.send(200, b"\x00\x01\x02", "application/octet-stream")
        if u.path == "/jsonp":
            return self.send(200, 'cb({"a": 1});', "text/javascript")
        if u.path == "/missing":
            return self.send(404, "nothing here", "text/plain")
        if u.path == "/slow":
            time.sleep(2)
            return self.send(200, "{}")
        if u.path == "/huge":
            return self.send(200, b"a" * ((64 << 20) + 1), "text/plain")
        if u.path == "/redirect":
            return self.send(302, "", "text/plain", [("Location", "/echo")])
        if u.path == "/flaky":
            FLAKY["count"] += 1
            if FLAKY["count"] % 3 != 0:
                return self.send(503, "try again", "text/plain")
            return self.send(200, '"finally"')
        if u.path == "/pages":
            page = int(parse_qs(u.query).get("page", ["1"])[0])
            extra = []
            if page < 3:
                extra.append(("Link", '<http://%s/pages?page=%d>; rel="next"' % (self.headers["Host"], page + 1)))
            return self.send(200, json.dumps([page * 10, page * 10 + 1]), extra=extra)
        return self.send(500, "unknown path", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = route


def serve():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd.server_address[1]


def expect_error(q, c, kind, fragment):
    try:
        q.run(c)
    except kind as e:
        assert fragment in str(e), (fragment, str(e))
        return
    raise AssertionError("no error for %r" % q)


def allowed(port):
    c = r.connect("127.0.0.1", port)
    base = "http://127.0.0.1:%d" % serve()
    got = r.http(base + "/echo", params={"a": 1, "b": "x"}, header={"X-Test": "yes"}).run(c)
    assert got["method"] == "GET" and got["query"] == {"a": "1", "b": "x"} and got["x_test"] == "yes", got
    got = r.http(base + "/echo", method="POST", data={"k": "v", "n": 2}).run(c)
    assert got["body"] in ("k=v&n=2", "n=2&k=v") and "form" in got["content_type"], got
    got = r.http(base + "/echo", method="PUT", data={"k": [1, 2]}).run(c)
    assert json.loads(got["body"]) == {"k": [1, 2]} and got["content_type"] == "application/json", got
    got = r.http(base + "/echo", auth={"type": "basic", "user": "u", "pass": "p"}).run(c)
    assert got["auth"] == "Basic " + base64.b64encode(b"u:p").decode(), got
    assert r.http(base + "/text").run(c) == "plain words"
    assert bytes(r.http(base + "/bytes").run(c)) == b"\x00\x01\x02"
    assert r.http(base + "/jsonp").run(c) == {"a": 1}
    assert r.http(base + "/text", result_format="binary").run(c) == b"plain words"
    assert r.http(base + "/echo", method="HEAD").run(c) is None
    expect_error(r.http(base + "/missing"), c, ReqlNonExistenceError,
                 "Error in HTTP GET of `%s/missing`: status code 404." % base)
    expect_error(r.http(base + "/text", result_format="json"), c, ReqlNonExistenceError,
                 "failed to parse JSON response")
    expect_error(r.http(base + "/slow", timeout=0.5), c, ReqlNonExistenceError,
                 "timed out after 0.500 seconds")
    # A body over the limit is an error, never silently cut.
    expect_error(r.http(base + "/huge"), c, ReqlNonExistenceError, "larger than 64 MiB")
    assert r.http(base + "/redirect").run(c)["path"] == "/echo"
    expect_error(r.http(base + "/redirect", redirects=0), c, ReqlNonExistenceError, "status code 302")
    assert r.http(base + "/flaky", attempts=5).run(c) == "finally"
    expect_error(r.http(base + "/flaky", attempts=1), c, ReqlNonExistenceError, "status code 503")
    assert list(r.http(base + "/pages", page="link-next", page_limit=-1).run(c)) == [10, 11, 20, 21, 30, 31]
    assert list(r.http(base + "/pages", page="link-next", page_limit=2).run(c)) == [10, 11, 20, 21]
    by_params = r.http(base + "/pages", params={"page": 1}, page_limit=3,
                       page=lambda info: {"params": {"page": info["params"]["page"].coerce_to("number").add(1)}})
    assert list(by_params.run(c)) == [10, 11, 20, 21, 30, 31]
    expect_error(r.http(base + "/echo", data="x"), c, ReqlQueryLogicError, "`data` should only be specified")
    expect_error(r.http(base + "/echo", method="BREW"), c, ReqlQueryLogicError, "`method` (BREW) is not recognized")
    expect_error(r.http(base + "/pages", page="link-next"), c, ReqlQueryLogicError, "without specifying `page_limit`")
    print("http allowed: ok")


def guarded(port):
    c = r.connect("127.0.0.1", port)
    local = serve()
    for url in ["http://127.0.0.1:%d/echo" % local, "http://localhost:%d/echo" % local,
                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]:%d/" % local]:
        expect_error(r.http(url, timeout=2), c, ReqlNonExistenceError, "refusing to connect to")
    print("http guarded: ok")


def disabled(port):
    c = r.connect("127.0.0.1", port)
    expect_error(r.http("http://example.com/"), c, ReqlQueryLogicError, "--enable-http")
    print("http disabled: ok")


if __name__ == "__main__":
    port = int(sys.argv[1])
    {"allowed": allowed, "guarded": guarded, "disabled": disabled}[sys.argv[2]](port)
