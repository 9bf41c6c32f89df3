"""What genovae asks an http(s) server before Snakemake's HTTP plugin downloads anything
(genovae.sources.probe, download_sizes, check_download_size): redirects only to http(s), one-line
errors for network and HTTP faults, and a download cut short refused whether or not the transfer
said so. Local servers on loopback; no Snakemake run (see test_remote.py and test_bad_inputs.py)."""

from __future__ import annotations

import http.server
import threading

import pytest

# ------------------------------------------------ what the server says, before the download
class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers every request from the class's ``routes``: path -> (status, headers, body)."""

    routes = {}
    protocol_version = "HTTP/1.0"

    def _answer(self, body_too):
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body_too and body:
            self.wfile.write(body)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)

    def log_message(self, *a):
        pass


@pytest.fixture
def scripted():
    handler = type("Handler", (Scripted,), {"routes": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_probe_follows_http_redirects_and_reports_the_declared_length(scripted):
    from genovae.sources import probe

    scripted.routes.update({
        "/a": (302, {"Location": "/b"}, b""),  # relative
        "/b": (301, {"Location": f"{scripted.url}/c"}, b""),
        "/c": (200, {"Content-Length": "1234"}, b""),
        "/chunked": (200, {"Transfer-Encoding": "chunked"}, b""),
        "/gz": (200, {"Content-Length": "99", "Content-Encoding": "gzip"}, b""),
        "/bare": (200, {}, b""),
    })
    assert probe(f"{scripted.url}/a") == {"url": f"{scripted.url}/c", "length": 1234, "framed": False,
                                          "encoded": False}
    assert probe(f"{scripted.url}/chunked")["framed"] and probe(f"{scripted.url}/chunked")["length"] is None
    assert probe(f"{scripted.url}/gz")["encoded"]
    assert probe(f"{scripted.url}/bare") == {"url": f"{scripted.url}/bare", "length": None, "framed": False,
                                             "encoded": False}


@pytest.mark.parametrize("route, words", [
    ((302, {"Location": "file:///etc/passwd"}, b""), "redirects to 'file:///etc/passwd': only http(s) redirects"),
    ((307, {"Location": "ftp://example.org/x"}, b""), "redirects to 'ftp://example.org/x'"),
    ((302, {"Location": "/loop"}, b""), "more than 10 redirects"),
    ((500, {}, b""), "the server answered HTTP 500"),
    ((404, {}, b""), "the server answered HTTP 404"),
])
def test_probe_refuses_what_must_not_be_downloaded(scripted, route, words):
    from genovae.errors import InputError
    from genovae.sources import probe

    scripted.routes["/loop"] = route
    with pytest.raises(InputError, match=f"^{scripted.url}/loop: ") as err:
        probe(f"{scripted.url}/loop")
    assert words in str(err.value)


def test_probe_of_an_unreachable_server_is_one_line():
    import socket

    from genovae.errors import InputError
    from genovae.sources import probe

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError) as err:
        probe(f"http://127.0.0.1:{port}/x", timeout=5)
    assert str(err.value) == (f"http://127.0.0.1:{port}/x: cannot be downloaded: "
                              "ConnectionError ([Errno 111] Connection refused)")


def test_a_server_that_refuses_head_is_asked_with_a_get(scripted):
    from genovae.sources import probe

    class NoHead(Scripted):
        routes = {"/x": (200, {"Content-Length": "7"}, b"abcdefg")}

        def do_HEAD(self):
            self.send_response(405)
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoHead)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert probe(f"http://127.0.0.1:{httpd.server_address[1]}/x")["length"] == 7
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_sizes_needs_a_length_or_a_checksum():
    from genovae.errors import InputError
    from genovae.sources import download_sizes

    said = {
        "http://h/declared": {"length": 10, "framed": False, "encoded": False},
        "http://h/chunked": {"length": None, "framed": True, "encoded": False},
        "http://h/gzip": {"length": 10, "framed": False, "encoded": True},
        "http://h/silent": {"length": None, "framed": False, "encoded": False},
    }
    probe = said.get
    origins = {"expression": "http://h/declared", "samples": "http://h/chunked", "genes": "local.tsv"}
    assert download_sizes(origins, {}, probe=probe) == {"expression": 10, "samples": None}
    assert download_sizes({"expression": "http://h/gzip"}, {}, probe=probe) == {"expression": None}
    with pytest.raises(InputError, match=r"^http://h/silent: the server declares no length.*data\.sha256\.samples"):
        download_sizes({"samples": "http://h/silent"}, {}, probe=probe)
    assert download_sizes({"samples": "http://h/silent"}, {"samples": "ab" * 32}, probe=probe) == {"samples": None}
    # a probe without an answer (a cluster job's node without network) checks nothing
    assert download_sizes({"expression": "http://h/x"}, {}, probe=lambda url: None) == {"expression": None}


def test_a_copy_of_another_size_than_declared_is_deleted_and_refused(tmp_path):
    from genovae.errors import InputError
    from genovae.sources import check_download_size

    copy_ = tmp_path / "expr.tsv"
    copy_.write_bytes(b"x" * 199)
    check_download_size(copy_, 199, "http://h/expr.tsv")
    check_download_size(copy_, None, "http://h/expr.tsv")
    with pytest.raises(InputError, match=r"^http://h/expr.tsv: the download is 199 bytes but the server declared "
                                         r"1,000: it was cut short"):
        check_download_size(copy_, 1000, "http://h/expr.tsv")
    assert not copy_.exists()
