"""`mpinet serve`: a checkpoint behind a small HTTP/1.1 API (the standard library only).

    POST /predict   body: an image (PNG, JPEG, PGM/PPM, BMP, GIF or WebP) of one digit,
                    or JSON {"inputs": [[784 pixels], ...]} / a 28x28 nested list (256 at most)
                    -> {"predictions": [{"label": 7, "name": "7", "probabilities": [...]}]}
                    ("name": the class name, "Ankle boot" for a Fashion-MNIST label 9)
    GET  /healthz   -> {"status": "ok", "checkpoint": <the file chosen>, "dataset": ...}
    GET  /metrics   Prometheus text: requests by endpoint and code, errors, latency

Bound to 127.0.0.1 unless --host says otherwise. Every refusal is a 4xx (503 when full or
busy) with {"error": "..."}; a 500 means a bug. The bounds (body, pixels, batch, timeouts,
connections) are http.Limits; docs/serve.md explains them; what a body may be, bodies.py.
SIGINT or SIGTERM: no new connections, the requests in flight are answered (up to 10 s),
exit 0.
"""

import logging
import signal
import threading
import warnings
from collections import deque

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .bodies import body_is_json, parse_inputs
from .checkpoint_dir import warn_skipped
from .connections import Server
from .http import Answer, HttpError, Limits, json_answer, printable
from .log import setup_logging
from .predict import CHECKPOINT_HELP, Predictor
from .threads import pin_blas_threads

HELP = "serve a checkpoint's predictions over HTTP (POST /predict, GET /healthz, /metrics)"
LIMITS = Limits()
MAX_BODY = LIMITS.max_body
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any)")


def run(args):
    setup_logging()
    warnings.showwarning = log_warning  # Pillow's warnings on odd files: one log line each
    # The forward passes take turns, and the cores are wanted by the threads decoding
    # requests: a BLAS pool of several threads spins against them (measured on 2 cores: 4
    # clients of 256-digit batches waited 1.4-2.1 s instead of 0.2 s).
    pin_blas_threads(1)
    predictor = Predictor(args.checkpoint, skipped=warn_skipped)
    server = make_server(predictor, args.host, args.port)
    host, port = server.server_address[:2]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info(
        "serving %s on http://%s:%d (POST /predict, GET /healthz, GET /metrics)",
        predictor.path,
        host,
        port,
    )  # the file chosen, when given a run directory
    while not stop.wait(0.5):  # the main thread stays free to run the signal handlers
        pass
    log.info(
        "stopping: no new connections; answering the requests in flight (up to %g s)",
        LIMITS.drain_timeout,
    )
    server.shutdown()
    left = server.server_close()
    log.info("stopped" if not left else f"stopped; {left} connections cut off")
    return 0


def log_warning(message, category, filename, lineno, file=None, line=None):
    log.warning("%s: %s", category.__name__, printable(str(message)))


def make_server(predictor, host="127.0.0.1", port=0, limits=LIMITS):
    """A server answering the API for `predictor` (call serve_forever, then shutdown and
    server_close)."""
    metrics = ServeMetrics()
    server = Server((host, port), Api(predictor, metrics, limits), metrics, limits)
    server.predictor, server.metrics = predictor, metrics
    return server


class ServeMetrics:
    """The service's own registry (not the global one): one per server."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mpinet_serve_requests", "HTTP requests answered", ["endpoint", "code"], registry=r
        )
        self.errors = Counter(
            "mpinet_serve_errors", "Requests answered with a 4xx or 5xx", ["endpoint"], registry=r
        )
        self.latency = Histogram(
            "mpinet_serve_request_duration_seconds",
            "Time to answer a request",
            ["endpoint"],
            registry=r,
        )
        self.predictions = Counter("mpinet_serve_predictions", "Digits predicted", registry=r)
        self.connections = Gauge("mpinet_serve_connections", "Connections open", registry=r)
        self.in_flight = Gauge(
            "mpinet_serve_requests_in_flight", "Requests being read or answered", registry=r
        )

    def observe(self, endpoint, code, seconds):
        self.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint).inc()
        self.latency.labels(endpoint).observe(seconds)


class Api:
    """The three endpoints; route() is called before a body is read, so that a request
    refused on its method or path costs no upload."""

    def __init__(self, predictor, metrics, limits):
        self.predictor, self.metrics, self.limits = predictor, metrics, limits
        self.turns = Turns()
        self.decoders = threading.BoundedSemaphore(limits.decoders)
        self.routes = {
            "/predict": {"POST": self.predict},
            "/healthz": {"GET": self.health, "HEAD": self.health},
            "/metrics": {"GET": self.metrics_text, "HEAD": self.metrics_text},
        }

    def endpoint(self, request):
        return request.path if request.path in self.routes else "other"

    def route(self, request):
        methods = self.routes.get(request.path)
        if methods is None:
            raise HttpError(
                404, f"no endpoint {printable(request.path, 80)}; try POST /predict or GET /healthz"
            )
        if request.method not in methods:
            allow = ", ".join(methods)
            raise HttpError(
                405,
                f"{request.method} {request.path}: not allowed; use {allow} {request.path}",
                [("Allow", allow)],
            )
        return methods[request.method]

    def health(self, request):
        return json_answer(
            200,
            {
                "status": "ok",
                "checkpoint": str(self.predictor.path),
                "dataset": self.predictor.dataset,
            },
        )

    def metrics_text(self, request):
        return Answer(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)

    def predict(self, request):
        if request.body is None:
            raise HttpError(411, "a Content-Length header is required")
        if not request.body:
            raise HttpError(400, "empty body: send an image or JSON")
        is_json = body_is_json(request.header("content-type"), request.body)
        images = self.decode(request.body, is_json)
        if len(images) > self.limits.max_batch:
            raise HttpError(
                413,
                f"inputs: {len(images)} images; the limit is "
                f"{self.limits.max_batch} per request; split the batch",
            )
        probabilities = self.forward(images)
        self.metrics.predictions.inc(len(images))
        names = self.predictor.names
        return json_answer(
            200,
            {
                "predictions": [
                    {
                        "label": int(p.argmax()),
                        "name": names[int(p.argmax())],
                        "probabilities": [round(float(v), 6) for v in p],
                    }
                    for p in probabilities
                ]
            },
        )

    def decode(self, body, is_json):
        """A body -> images, `limits.decoders` at a time: a decoded image may take tens of
        MB, and JSON parsing holds the GIL, so more at once would cost memory, not gain."""
        if not self.decoders.acquire(timeout=self.limits.queue_timeout):
            raise HttpError(503, "busy decoding other requests; try again", [("Retry-After", "1")])
        try:
            return parse_inputs(body, is_json)
        finally:
            self.decoders.release()

    def forward(self, images):
        """Forward passes of `limits.chunk` images, each taking its turn: a 256-image batch
        lets a one-image request in between its chunks instead of making it wait for all."""
        parts = []
        for start in range(0, len(images), self.limits.chunk):
            with self.turns:
                parts.append(
                    self.predictor.probabilities(images[start : start + self.limits.chunk])
                )
        return np.concatenate(parts)


class Turns:
    """A lock handed over in arrival order. A threading.Lock is usually re-taken by the
    thread that just released it (it still runs), so chunking alone would not let others in."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._busy = False
        self._waiting = deque()

    def __enter__(self):
        with self._mutex:
            if not self._busy:
                self._busy = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # set by the thread handing its turn over: then this one holds it

    def __exit__(self, *exc_info):
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._busy = False
