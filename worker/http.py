"""HTTP/1.1 for `mpinet serve`, strict and bounded (RFC 9112): what a request may be and
how an answer is written. No framework; `sockets.py` reads requests, `connections.py` runs
the connections, `serve.py` the API.

Refused, each with a status line and a JSON body {"error": ...}:
    400  a malformed request line or header line, a version other than HTTP/1.0 or 1.1,
         no Host (HTTP/1.1) or two, Content-Length not ASCII digits or given twice,
         Content-Length together with Transfer-Encoding (request smuggling behind a proxy)
    408  nothing sent within the idle timeout, a head or a body not complete in time
    411  Transfer-Encoding (chunked bodies are not read: send a Content-Length)
    413  a body over the limit;  414  a request line over 8 KiB
    417  an Expect other than 100-continue
    431  a header line over 8 KiB, more than 64 of them, or a head over 32 KiB
After any of these the connection is closed: where the next request starts is unknown.
Reading a request from a socket, with deadlines: sockets.py.
"""

import json
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus


@dataclass(frozen=True)
class Limits:
    """Every bound of the server in one place (docs/serve.md lists them with the reasons)."""

    max_body: int = 2**20  # bytes of a request body: 413 above
    max_line: int = 8192  # bytes of the request line (414) and of one header line (431)
    max_headers: int = 64  # header lines: 431 above
    max_head: int = 32768  # bytes of the request line and headers together: 431 above
    idle_timeout: float = 5.0  # s without a byte: a new connection gets 408, an idle one closes
    header_timeout: float = 10.0  # s from a request's first byte to the end of its head: 408
    body_timeout: float = 30.0  # s to receive a body: 408 (1 MiB at 35 KB/s)
    send_timeout: float = 10.0  # s a client may take to read its answer: then it is closed
    max_connections: int = 128  # connections open at once; one more is answered 503
    drain_timeout: float = 10.0  # s SIGTERM waits for the requests in flight
    decoders: int = 2  # bodies decoded at once (a 4 MP image may take 70 MB while it is)
    queue_timeout: float = 10.0  # s a request waits for a decoder: then 503
    max_batch: int = 256  # images in one request: 413 above
    chunk: int = 32  # images per forward pass; the passes take turns between chunks


class HttpError(Exception):
    """A request the client must fix: answered with `code` and the message as JSON."""

    def __init__(self, code, message, headers=()):
        super().__init__(message)
        self.code = code
        self.headers = tuple(headers)
        self.line = ""  # the request line, printable, when no Request could be made of it


@dataclass
class Request:
    method: str
    target: str  # as sent (visible ASCII), for the log
    path: str  # the target without its query: what routing looks at
    version: str
    headers: dict  # lower-case name -> [values, in order]
    length: int | None = None  # Content-Length; None: no body
    body: bytes | None = None  # set once read

    def header(self, name, default=""):
        values = self.headers.get(name)
        return values[-1] if values else default

    @property
    def keep_alive(self):
        tokens = {
            t.strip().lower() for v in self.headers.get("connection", ()) for t in v.split(",")
        }
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def complete(self):
        """Read to its end: the connection can carry another request."""
        return not self.length or self.body is not None


@dataclass
class Answer:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple = field(default=())


def json_answer(code, value, headers=()):
    return Answer(code, (json.dumps(value) + "\n").encode(), headers=tuple(headers))


def error_answer(error):
    return json_answer(error.code, {"error": str(error)}, error.headers)


def printable(text, limit=200):
    """`text` safe for a log line: control and non-ASCII characters escaped, length cut."""
    out = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


def encode(answer, keep_alive, version="HTTP/1.1", head=False):
    """The bytes of an answer; no body for HEAD. No version in Server: nothing to fingerprint."""
    lines = [
        f"HTTP/1.1 {answer.code} {HTTPStatus(answer.code).phrase}",
        "Server: mpinet-serve",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(answer.body)}",
        "X-Content-Type-Options: nosniff",
    ]
    lines += [f"{name}: {value}" for name, value in answer.headers]
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head else data + answer.body


TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no spaces, controls or escapes
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls; HTAB and obs-text are allowed
DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII only: str.isdigit() takes '²', int() refuses it


def parse_head(head, limits):
    """The bytes before the blank line -> Request, or HttpError."""
    if len(head) > limits.max_head:
        raise HttpError(431, f"request head over {limits.max_head} bytes")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    method, target, version = parse_request_line(lines[0], limits)
    headers = parse_headers(lines[1:], limits)
    request = Request(method, target, route_path(target), version, headers)
    if version == "HTTP/1.1" and len(headers.get("host", ())) != 1:
        raise HttpError(400, "Host: expected exactly one Host header (HTTP/1.1)")
    request.length = body_length(headers)
    expect = request.header("expect").lower()
    if expect and expect != "100-continue":
        raise HttpError(417, f"Expect: {printable(expect, 60)}; expected 100-continue or none")
    return request


def parse_request_line(line, limits):
    if len(line) > limits.max_line:
        raise HttpError(414, f"request line of {len(line)} bytes; the limit is {limits.max_line}")
    parts = line.split(b" ")
    shown = printable(line.decode("latin-1"), 80)
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not TARGET.fullmatch(parts[1]):
        raise HttpError(400, f"request line '{shown}': expected METHOD /path HTTP/1.1")
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(400, f"request line '{shown}': this server speaks HTTP/1.1 and 1.0")
    return tuple(p.decode("ascii") for p in parts)


def route_path(target):
    """The path routing looks at: the query is not part of it; absolute-form is accepted."""
    if match := re.match(r"https?://[^/?]*", target, re.IGNORECASE):
        target = target[match.end() :] or "/"
        target = target if target.startswith("/") else "/" + target
    if not target.startswith("/") and target != "*":
        raise HttpError(400, f"request target '{printable(target, 80)}': expected /path")
    return target.split("?", 1)[0]


def parse_headers(lines, limits):
    if len(lines) > limits.max_headers:
        raise HttpError(431, f"{len(lines)} header lines; the limit is {limits.max_headers}")
    headers = {}
    for line in lines:
        if len(line) > limits.max_line:
            raise HttpError(
                431, f"a header line of {len(line)} bytes; the limit is {limits.max_line}"
            )
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not TOKEN.fullmatch(name) or BAD_VALUE.search(value):
            shown = printable(line.decode("latin-1"), 80)
            raise HttpError(
                400,
                f"header line '{shown}': expected Name: value (no folding, no control characters)",
            )
        headers.setdefault(name.decode("ascii").lower(), []).append(value.decode("latin-1"))
    return headers


def body_length(headers):
    """Content-Length, strictly: one value of ASCII digits, and no Transfer-Encoding."""
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise HttpError(
                400, "both Transfer-Encoding and Content-Length; expected only Content-Length"
            )
        raise HttpError(
            411, "Transfer-Encoding is not accepted; send the body with a Content-Length"
        )
    values = headers.get("content-length")
    if values is None:
        return None
    if len(values) != 1 or not DIGITS.fullmatch(values[0]):
        shown = printable(", ".join(values), 40)
        raise HttpError(400, f"Content-Length '{shown}': expected one number in ASCII digits")
    return int(values[0])
