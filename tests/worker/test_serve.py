"""`mpinet serve`: a checkpoint behind HTTP; concurrent requests, bad input, health, metrics,
SIGTERM. The checkpoint is tests/worker/conftest.py's MLP trained on MNIST."""

import io
import json
import signal
import subprocess
import threading

import numpy as np
import pytest
from inference_support import N_DIGITS, as_png, metric, request
from PIL import Image
from support import job_environment, mpinet_command

from mpinet.data.images import image_from_bytes
from mpinet.worker.predict import Predictor
from mpinet.worker.serve import MAX_BODY, make_server


@pytest.fixture(scope="module")
def server(checkpoint):
    server = make_server(Predictor(checkpoint), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_serve_answers_concurrent_requests(server, checkpoint, test_digits):
    digits, _ = test_digits
    predictor = Predictor(checkpoint)
    pngs = [as_png(d) for d in digits]
    expected_png = [
        int(p.argmax())
        for p in predictor.probabilities(np.stack([image_from_bytes(b) for b in pngs]))
    ]
    expected_raw = [int(p.argmax()) for p in predictor.probabilities(digits / 255)]
    _, before = request(server + "/metrics")
    failures = []

    def client(k):
        try:
            ask(k)
        except OSError as e:  # a refused or reset connection is a failure too
            failures.append((k, repr(e)))

    def ask(k):
        for j in range(5):
            i = (k + j) % N_DIGITS
            if j % 2:
                code, body = request(server + "/predict", pngs[i], "image/png")
                want = [expected_png[i]]
            else:
                payload = {"inputs": digits[[i, i - 1]].reshape(2, 784).tolist()}
                code, body = request(
                    server + "/predict", json.dumps(payload).encode(), "application/json"
                )
                want = [expected_raw[i], expected_raw[i - 1]]
            got = [p["label"] for p in body["predictions"]] if code == 200 else body
            if got != want:
                failures.append((k, j, code, got, want))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    _, after = request(server + "/metrics")
    grown = metric(after, "mpinet_serve_requests_total", endpoint="/predict", code="200") - metric(
        before, "mpinet_serve_requests_total", endpoint="/predict", code="200"
    )
    assert grown == 80
    assert metric(after, "mpinet_serve_request_duration_seconds_count", endpoint="/predict") >= 80


BAD_REQUESTS = [
    ("not json", b"{inputs: 1", "application/json", 400, "not valid JSON"),
    ("no inputs", b'{"images": []}', "application/json", 400, 'expected {"inputs"'),
    ("wrong shape", b"[[1, 2, 3]]", "application/json", 400, "shape (1, 3)"),
    ("ragged", b"[[1, 2], [3]]", "application/json", 400, "inputs: rows of unequal length"),
    ("strings", json.dumps([["a"] * 28] * 28).encode(), "application/json", 400, "dtype"),
    ("out of range", json.dumps([[300] * 784]).encode(), "application/json", 400, "0..255"),
    ("not an image", b"GIF89a but not really", "image/gif", 400, "not an image"),
    ("blank image", None, "image/png", 400, "blank"),
    ("empty", b"", "image/png", 400, "empty body"),
    ("too large", b"\0" * (MAX_BODY + 1), "image/png", 413, "limit is 1048576"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_serve_answers_bad_input_with_4xx(server, case):
    _, body, content_type, status, message = case
    if body is None:
        out = io.BytesIO()
        Image.new("L", (50, 50), 255).save(out, "PNG")
        body = out.getvalue()
    code, answer = request(server + "/predict", body, content_type)
    assert code == status and message in answer["error"], answer


def test_serve_health_metrics_and_unknown_paths(server):
    _, before = request(server + "/metrics")
    code, health = request(server + "/healthz")
    assert code == 200 and health["status"] == "ok" and health["checkpoint"].endswith(".h5")
    assert request(server + "/predict")[0] == 405  # GET
    assert request(server + "/nothing")[0] == 404
    assert request(server + "/healthz", b"x")[0] == 405  # POST
    _, after = request(server + "/metrics")
    assert metric(after, "mpinet_serve_requests_total", endpoint="/healthz", code="200") >= 1
    assert (
        metric(after, "mpinet_serve_errors_total", endpoint="other")
        - metric(before, "mpinet_serve_errors_total", endpoint="other")
    ) == 1
    assert "mpinet_serve_request_duration_seconds_bucket" in after


def test_serve_command_stops_cleanly_on_sigterm(checkpoint):
    proc = subprocess.Popen(
        mpinet_command() + ["serve", str(checkpoint), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=job_environment(),
    )
    try:
        line = proc.stderr.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        url = line.split("http://", 1)[1].split()[0]
        assert request(f"http://{url}/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert '"GET /healthz" 200' in err and "stopping" in err
