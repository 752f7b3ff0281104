"""`mpinet serve` speaks strict HTTP/1.1: real bytes over a socket to the real server object
on 127.0.0.1. Every malformed or hostile request gets a 4xx with a JSON body, counted in
/metrics by code, and nothing in the log but one line per request."""

import json
import logging
import socket
import threading
import time

import pytest

from mpinet.worker.http import Limits
from mpinet.worker.predict import Predictor
from mpinet.worker.serve import make_server

LIMITS = Limits(idle_timeout=1.0, header_timeout=2.0, body_timeout=2.0)
H = b"Host: t\r\n"


@pytest.fixture(scope="module")
def port(checkpoint):
    server = make_server(Predictor(checkpoint), "127.0.0.1", 0, LIMITS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class Client:
    """One connection; reads answers one at a time by their Content-Length."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)
        return self

    def _more(self):
        data = self.sock.recv(65536)
        assert data, f"the server closed the connection; had {self.buffer[:200]!r}"
        self.buffer += data

    def answer(self, head=False):
        """-> (code, headers with lower-case names, body: JSON decoded when it is JSON)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        top, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        length = 0 if head else int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if body and headers.get("content-type") == "application/json":
            body = json.loads(body)
        return int(lines[0].split()[1]), headers, body

    def closed(self):
        """True once the server has closed its side (b"" from recv)."""
        return self.sock.recv(65536) == b""


def exchange(port, data):
    client = Client(port).send(data)
    try:
        return client.answer()
    finally:
        client.sock.close()


def counts(port):
    """/metrics: requests answered by code, all endpoints together."""
    _, _, text = exchange(port, b"GET /metrics HTTP/1.1\r\n" + H + b"\r\n")
    found = {}
    for line in text.decode().splitlines():
        if line.startswith("mpinet_serve_requests_total{"):
            code = line.split('code="')[1].split('"')[0]
            found[code] = found.get(code, 0) + float(line.rsplit(" ", 1)[1])
    return found


def post(body, *headers, content_type=b"application/json"):
    return (
        b"POST /predict HTTP/1.1\r\n"
        + H
        + b"Content-Type: "
        + content_type
        + b"\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


DIGIT = json.dumps([[0] * 784]).encode()
HOSTILE = {  # name: (raw request, status, words of the error)
    "100,000 nested [": (post(b"[" * 100_000), 400, "nested too deeply"),
    "2,000 nested objects": (post(b'{"a":' * 2000 + b"1" + b"}" * 2000), 400, "nested too deep"),
    "nested lists 5 deep": (post(b"[[[[[0]]]]]"), 400, "nested more than 3 deep"),
    "an integer of 5000 digits": (post(b"[" + b"9" * 5000 + b"]"), 400, "not valid JSON"),
    "NaN pixels": (post(b"[" + b"NaN," * 783 + b"NaN]"), 400, "not finite"),
    "Content-Length ²": (
        b"POST /predict HTTP/1.1\r\n" + H + "Content-Length: ²\r\n\r\n".encode(),
        400,
        "ASCII digits",
    ),
    "Content-Length twice": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n[]",
        400,
        "one number",
    ),
    "Content-Length 2, 2": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Content-Length: 2, 2\r\n\r\n[]",
        400,
        "one number",
    ),
    "Content-Length -1": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
        400,
        "ASCII digits",
    ),
    "Content-Length and chunked": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n[]",
        400,
        "both",
    ),
    "chunked": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"2\r\n[]\r\n0\r\n\r\n",
        411,
        "Content-Length",
    ),
    "no Content-Length": (b"POST /predict HTTP/1.1\r\n" + H + b"\r\n", 411, "Content-Length"),
    "a huge Content-Length": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Content-Length: 999999999999999\r\n\r\n",
        413,
        "limit is 1048576",
    ),
    "not HTTP": (b"garbage\r\n\r\n", 400, "expected METHOD /path HTTP/1.1"),
    "HTTP/0.9": (b"GET /healthz\r\n\r\n", 400, "expected METHOD /path"),
    "two spaces": (b"GET  /healthz HTTP/1.1\r\n" + H + b"\r\n", 400, "expected METHOD"),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "speaks HTTP/1.1 and 1.0"),
    "an escape in the path": (b"GET /\x1b[2J HTTP/1.1\r\n" + H + b"\r\n", 400, "\\x1b[2J"),
    "UTF-8 in the path": ("GET /é HTTP/1.1\r\n".encode() + H + b"\r\n", 400, "expected METHOD"),
    "a relative target": (b"GET healthz HTTP/1.1\r\n" + H + b"\r\n", 400, "expected /path"),
    "unknown method": (b"BREW /healthz HTTP/1.1\r\n" + H + b"\r\n", 405, "use GET, HEAD"),
    "DELETE /predict": (b"DELETE /predict HTTP/1.1\r\n" + H + b"\r\n", 405, "use POST"),
    "GET /predict": (b"GET /predict HTTP/1.1\r\n" + H + b"\r\n", 405, "use POST"),
    "unknown path": (b"PUT /admin HTTP/1.1\r\n" + H + b"\r\n", 404, "no endpoint /admin"),
    "request line of 9 KiB": (
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n",
        414,
        "limit is 8192",
    ),
    "header line of 9 KiB": (
        b"GET /healthz HTTP/1.1\r\n" + H + b"X: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "limit is 8192",
    ),
    "100 headers": (
        b"GET /healthz HTTP/1.1\r\n" + H + b"X: y\r\n" * 100 + b"\r\n",
        431,
        "limit is 64",
    ),
    "a head of 40 KiB": (
        b"GET /healthz HTTP/1.1\r\n" + H + (b"X: " + b"a" * 1000 + b"\r\n") * 40 + b"\r\n",
        431,
        "over 32768 bytes",
    ),
    "space before the colon": (b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400, "Name: value"),
    "folded header": (b"GET /healthz HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400, "folding"),
    "NUL in a header": (b"GET /healthz HTTP/1.1\r\n" + H + b"X: a\0b\r\n\r\n", 400, "control"),
    "no Host": (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "Host"),
    "two Hosts": (b"GET /healthz HTTP/1.1\r\n" + H + H + b"\r\n", 400, "Host"),
    "Expect: 200-ok": (
        b"POST /predict HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n[]",
        417,
        "100-continue",
    ),
    "multipart": (
        post(b"--x\r\n", content_type=b"multipart/form-data; boundary=x"),
        415,
        "--data-binary",
    ),
    "text/html": (post(b"<html>", content_type=b"text/html"), 415, "application/json"),
    "257 digits": (post(json.dumps([[0] * 784] * 257).encode()), 413, "limit is 256"),
    "EPS (not a format accepted here)": (
        post(
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n",
            content_type=b"application/postscript",
        ),
        415,
        "",
    ),
    "EPS said to be an image": (
        post(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n", content_type=b"image/eps"),
        400,
        "format accepted here",
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_request_gets_a_4xx_with_a_json_error(port, name):
    raw, status, words = HOSTILE[name]
    code, headers, body = exchange(port, raw)
    assert code == status, body
    assert headers["content-type"] == "application/json" and words in body["error"], body
    assert headers["server"] == "mpinet-serve"  # no Python version to fingerprint
    if code == 405:
        assert headers["allow"] in ("GET, HEAD", "POST")


def test_every_refusal_is_counted_in_metrics_by_code(port, caplog):
    before = counts(port)
    with caplog.at_level(logging.INFO, logger="mpinet"):
        for raw, _, _ in HOSTILE.values():
            exchange(port, raw)
    after = counts(port)
    expected = {}
    for _, status, _ in HOSTILE.values():
        expected[str(status)] = expected.get(str(status), 0) + 1
    assert {c: after.get(c, 0) - before.get(c, 0) for c in expected} == expected
    assert not any(code.startswith("5") for code in after)
    assert all(r.levelno < logging.ERROR and not r.exc_info for r in caplog.records)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(HOSTILE)  # one line per request
    assert any('"GET /\\x1b[2J HTTP/1.1" 400' in line for line in lines), lines
    assert all("\x1b" not in line and "\0" not in line for line in lines)


VALID = {  # name: (raw request, status)
    "query string": (b"GET /healthz?x=1 HTTP/1.1\r\n" + H + b"\r\n", 200),
    "absolute-form target": (b"GET http://t/healthz HTTP/1.1\r\n" + H + b"\r\n", 200),
    "HTTP/1.0 without Host": (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
    "blank lines first": (b"\r\n\r\nGET /healthz HTTP/1.1\r\n" + H + b"\r\n", 200),
    "bare LF line ends": (b"GET /healthz HTTP/1.1\nHost: t\n\n", 200),
    "one digit": (post(DIGIT), 200),
    "256 digits": (post(json.dumps([[0] * 784] * 256).encode()), 200),
}


@pytest.mark.parametrize("name", VALID)
def test_well_formed_variants_are_answered(port, name):
    raw, status = VALID[name]
    code, _, body = exchange(port, raw)
    assert code == status, body


def test_head_answers_the_headers_of_get_without_a_body(port):
    client = Client(port).send(b"HEAD /healthz HTTP/1.1\r\n" + H + b"\r\n")
    code, headers, body = client.answer(head=True)
    assert code == 200 and int(headers["content-length"]) > 0 and body == b""
    client.send(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")  # same connection: no stray bytes
    code, headers, body = client.answer()
    assert code == 200 and len(json.dumps(body)) + 1 == int(headers["content-length"])
    client.send(b"HEAD /predict HTTP/1.1\r\n" + H + b"\r\n")  # a refused HEAD: no body either
    code, headers, body = client.answer(head=True)
    assert code == 405 and headers["allow"] == "POST" and body == b""
    assert client.send(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n").answer()[0] == 200


def test_keep_alive_and_pipelining_on_one_connection(port):
    client = Client(port)
    for _ in range(20):
        assert client.send(post(DIGIT)).answer()[0] == 200
    client.send(
        (b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n") * 3
        + b"GET /nothing HTTP/1.1\r\n"
        + H
        + b"\r\n"
        + post(DIGIT, b"Connection: close")
    )
    assert [client.answer()[0] for _ in range(5)] == [200, 200, 200, 404, 200]
    assert client.closed()


def test_http_1_0_keeps_alive_only_when_asked(port):
    client = Client(port).send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    code, headers, _ = client.answer()
    assert code == 200 and headers["connection"] == "keep-alive"
    client.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    code, headers, _ = client.answer()
    assert code == 200 and headers["connection"] == "close" and client.closed()


def test_expect_100_continue_is_answered_at_once(port):
    body = DIGIT
    client = Client(port, timeout=LIMITS.body_timeout).send(
        b"POST /predict HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Type: "
        b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    start = time.monotonic()
    while b"\r\n\r\n" not in client.buffer:
        client._more()
    assert client.buffer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert time.monotonic() - start < 0.5  # curl waits 1 s for it before sending anyway
    client.buffer = client.buffer[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
    assert client.send(body).answer()[0] == 200


def test_a_refused_expect_gets_its_answer_instead_of_100(port):
    client = Client(port).send(
        b"POST /healthz HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    code, headers, _ = client.answer()
    assert code == 405 and headers["connection"] == "close"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_leaving_mid_request_is_one_log_line(port, caplog, how):
    with caplog.at_level(logging.INFO, logger="mpinet"):
        client = Client(port).send(post(DIGIT)[:-100])
        time.sleep(0.2)  # the server is reading the body
        if how == "reset":  # SO_LINGER 0: the close sends RST
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        client.sock.close()
        deadline = time.monotonic() + 5
        while not any("disconnected" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    found = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(found) == 1 and not found[0].exc_info and "\n" not in found[0].getMessage()
