"""`mpinet serve`: a checkpoint behind a small HTTP API (stdlib server, no framework).

    POST /predict   body: an image (PNG, JPEG, PGM, ...) of one digit, or JSON
                    {"inputs": [[784 pixels], ...]} / a 28x28 nested list
                    -> {"predictions": [{"label": 7, "name": "7", "probabilities": [...]}]}
                    ("name": the class name, "Ankle boot" for a Fashion-MNIST label 9)
    GET  /healthz   -> {"status": "ok", "checkpoint": <the file chosen>, "dataset": ...}
    GET  /metrics   Prometheus text: requests by endpoint and code, errors, latency

Bound to 127.0.0.1 unless --host says otherwise; bodies over 1 MiB get 413. Bad input is
always a 4xx with {"error": "..."}; a 5xx means a bug. Requests are served on threads; the
forward passes take turns (Predictor's lock). SIGINT or SIGTERM stops it, with exit 0.
"""

import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from mpinet.data.images import as_images, image_from_bytes

from .checkpoints import warn_skipped
from .log import setup_logging
from .predict import CHECKPOINT_HELP, Predictor

HELP = "serve a checkpoint's predictions over HTTP (POST /predict, GET /healthz, /metrics)"
MAX_BODY = 2**20
DISCARD_LIMIT = 16 * MAX_BODY  # refused bodies up to this size are read (and dropped)
ENDPOINTS = ("/predict", "/healthz", "/metrics")
log = logging.getLogger("mpinet.worker")


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any)")


def run(args):
    setup_logging()
    predictor = Predictor(args.checkpoint, skipped=warn_skipped)
    server = make_server(predictor, args.host, args.port)
    host, port = server.server_address[:2]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("serving %s on http://%s:%d (POST /predict, GET /healthz, GET /metrics)",
             predictor.path, host, port)  # the file chosen, when given a run directory
    while not stop.wait(0.5):  # the main thread stays free to run the signal handlers
        pass
    log.info("stopping")
    server.shutdown()
    server.server_close()
    return 0


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog: the default 5 resets bursts of clients


def make_server(predictor, host="127.0.0.1", port=0):
    """A threading HTTP server answering the API for `predictor` (call serve_forever)."""
    try:
        server = Server((host, port), Handler)
    except OSError as e:
        raise OSError(f"serve: cannot listen on {host}:{port} ({e.strerror or e})") from None
    server.predictor = predictor
    server.metrics = ServeMetrics()
    return server


class ServeMetrics:
    """The service's own registry (not the global one): one per server."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("mpinet_serve_requests", "HTTP requests answered",
                                ["endpoint", "code"], registry=r)
        self.errors = Counter("mpinet_serve_errors", "Requests answered with a 4xx or 5xx",
                              ["endpoint"], registry=r)
        self.latency = Histogram("mpinet_serve_request_duration_seconds",
                                 "Time to answer a request", ["endpoint"], registry=r)
        self.predictions = Counter("mpinet_serve_predictions", "Digits predicted", registry=r)

    def observe(self, endpoint, code, seconds):
        self.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint).inc()
        self.latency.labels(endpoint).observe(seconds)


class BadRequest(Exception):
    """A request the client must fix: answered with `code` and the message as JSON."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Handler(BaseHTTPRequestHandler):
    server_version = "mpinet-serve"

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _get(self):
        if self.path == "/healthz":
            predictor = self.server.predictor
            return 200, {"status": "ok", "checkpoint": str(predictor.path),
                         "dataset": predictor.dataset}
        if self.path == "/metrics":
            return 200, generate_latest(self.server.metrics.registry)
        if self.path == "/predict":
            raise BadRequest(405, "use POST /predict with an image or JSON body")
        raise BadRequest(404, f"no endpoint {self.path}; try POST /predict or GET /healthz")

    def _post(self):
        if self.path != "/predict":
            raise BadRequest(404 if self.path not in ENDPOINTS else 405,
                             f"POST {self.path}: only POST /predict takes a body")
        images = parse_inputs(self._body(), self.headers.get("Content-Type", ""))
        predictor = self.server.predictor
        probabilities = predictor.probabilities(images)
        self.server.metrics.predictions.inc(len(images))
        return 200, {"predictions": [{"label": int(p.argmax()),
                                      "name": predictor.names[int(p.argmax())],
                                      "probabilities": [round(float(v), 6) for v in p]}
                                     for p in probabilities]}

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest(411, "a Content-Length header is required")
        if int(length) > MAX_BODY:
            self._discard(int(length))
            raise BadRequest(413, f"body of {length} bytes; the limit is {MAX_BODY}")
        if int(length) == 0:
            raise BadRequest(400, "empty body: send an image or JSON")
        return self.rfile.read(int(length))

    def _discard(self, length):
        """Read and drop a refused body, so the client sees the 413 and not a reset
        connection; one far too large is left unread and the connection closed."""
        self.close_connection = True
        if length <= DISCARD_LIMIT:
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:  # the client gave up
                    break
                length -= len(chunk)

    def _answer(self, handle):
        start = time.perf_counter()
        try:
            code, body = handle()
        except BadRequest as e:
            code, body = e.code, {"error": str(e)}
        except Exception:  # a bug, not bad input: logged with its traceback, answered 500
            log.exception("%s %s failed", self.command, self.path)
            code, body = 500, {"error": "internal error; see the server's log"}
        seconds = time.perf_counter() - start
        endpoint = self.path if self.path in ENDPOINTS else "other"
        # Counted before the answer leaves: a client that got it finds it in /metrics.
        self.server.metrics.observe(endpoint, code, seconds)
        self._send(code, body)
        log.info('%s "%s %s" %d %.1f ms', self.client_address[0], self.command, self.path,
                 code, 1e3 * seconds)

    def _send(self, code, body):
        if isinstance(body, bytes):
            data, kind = body, CONTENT_TYPE_LATEST
        else:
            data, kind = (json.dumps(body) + "\n").encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        """Silenced: _answer logs one line per request, with its latency."""

    def log_message(self, format, *args):
        log.warning("%s %s", self.client_address[0], format % args)


def parse_inputs(body, content_type):
    """A request body -> images (n, 28, 28) in [0, 1], or BadRequest(400/415)."""
    is_json = "json" in content_type or body.lstrip()[:1] in (b"{", b"[")
    try:
        if is_json:
            return json_images(body)
        return image_from_bytes(body, "body")[None]
    except ValueError as e:
        raise BadRequest(400, str(e)) from None


def json_images(body):
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"body is not valid JSON ({e})") from None
    if isinstance(value, dict):
        if "inputs" not in value:
            raise ValueError('JSON body: expected {"inputs": [...]} or a list of pixels')
        value = value["inputs"]
    try:
        return as_images(value, "inputs")
    except (TypeError, OverflowError):
        raise ValueError("inputs: expected numbers in nested lists") from None
