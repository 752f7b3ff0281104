"""Inference from a checkpoint: `mpinet eval` (alone and under mpiexec), `predict`, `serve`.

A small MLP is trained in-process for a few hundred steps on the real MNIST and saved the
way the training loop saves it; the commands then run on that file.
"""

import io
import json
import logging
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import h5py
import numpy as np
import pytest
from numerics import affine_relu_logit_bound, ambiguous_samples, mean_loss_bound
from PIL import Image, ImageOps
from support import job_environment, mpiexec, mpinet_command, run_job

from mpinet.data import TrainBatches
from mpinet.data.images import image_from_bytes
from mpinet.model import build, load
from mpinet.model.checkpoint import save
from mpinet.model.optimizers import create
from mpinet.worker.cli import main
from mpinet.worker.config import load_config, model_spec, to_toml
from mpinet.worker.predict import Predictor
from mpinet.worker.serve import MAX_BODY, make_server

N_DIGITS = 12


@pytest.fixture(scope="module")
def checkpoint(mnist_h5, tmp_path_factory):
    """An MLP trained for 300 steps (about 94% on the test set), saved as the loop saves."""
    cfg = load_config(None, ["model.name='mlp'", "model.hidden=[64]", f"data.path='{mnist_h5}'"])
    net, opt = build(model_spec(cfg), seed=0), create("adam", lr=0.003)
    batches = TrainBatches(mnist_h5, global_batch=100, rank=0, world_size=1, seed=0,
                           shape="flat", prefetch=False)
    for _, (x, t) in zip(range(300), batches.epoch(0), strict=False):
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    path = tmp_path_factory.mktemp("run") / "ckpt-00000300.h5"
    return save(path, net, opt, {"step": 300, "epoch": 0, "config": to_toml(cfg)})


@pytest.fixture(scope="module")
def test_digits(mnist_h5):
    with h5py.File(mnist_h5, "r") as f:
        return f["test/images"][:N_DIGITS], f["test/labels"][:N_DIGITS]


def as_png(digit, scale=5, fmt="PNG", mode="L"):
    """An MNIST digit drawn as a photo of paper would show it: dark ink on light, larger,
    off-centre, in a wider canvas."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale),
                                              Image.Resampling.BICUBIC)
    canvas = Image.new("L", (28 * scale + 90, 28 * scale + 30), 235)
    canvas.paste(big, (70, 5))
    if mode == "RGBA":  # black ink, opaque where the ink is: paper transparent
        black = Image.new("L", canvas.size, 0)
        canvas = Image.merge("RGBA", [black, black, black, ImageOps.invert(canvas)])
    out = io.BytesIO()
    canvas.save(out, fmt)
    return out.getvalue()


# -- eval ---------------------------------------------------------------------------------


def eval_json(command):
    job = run_job(command, timeout=60)
    assert job.returncode == 0, job.output
    return json.loads(job.stdout)


@pytest.mark.numerics
@pytest.mark.mpi
def test_eval_alone_and_under_mpiexec_count_the_same(checkpoint, mnist_h5):
    alone = eval_json(mpinet_command() + ["eval", str(checkpoint), "--json"])
    if mpiexec() is None:
        pytest.skip("no mpiexec: only the single-process eval ran")
    three = eval_json([mpiexec(), "-n", "3"] + mpinet_command() +
                      ["eval", str(checkpoint), "--json"])
    assert alone["samples"] == three["samples"] == 10000
    assert alone["ranks"] == 1 and three["ranks"] == 3
    assert alone["data"] == str(mnist_h5)  # the data file named in the stored config
    net = load(checkpoint)
    with h5py.File(mnist_h5, "r") as f:
        x, t = f["test/images"][:].reshape(-1, 784) / np.float32(255), f["test/labels"][:]
    # Not bitwise: 1 and 3 ranks forward other batch shapes, and BLAS may round a float32
    # logit differently in each (measured: 2.7e-9 relative in the loss with OpenBLAS's
    # Haswell kernel, 0 with SkylakeX). The bound: gamma(K+1) per affine propagated to the
    # logits, then to the mean loss (tests/numerics.py); float64 sums of 10000 losses add
    # 2e-12 more. A label can change only where the two top logits are within the bound.
    layers = [(net.params[f"affine{i}.W"].astype(np.float64),
               net.params[f"affine{i}.b"].astype(np.float64)) for i in (1, 2)]
    logit_bound = affine_relu_logit_bound(layers, x, np.float32)
    flips = ambiguous_samples(net.predict(x).astype(np.float64), logit_bound)
    moved = np.abs(np.array(alone["confusion_matrix"]) - three["confusion_matrix"]).sum()
    assert moved <= 2 * flips  # each changed label moves one count out of a cell, into another
    assert abs(alone["accuracy"] - three["accuracy"]) * 10000 <= flips
    assert alone["accuracy"] > 0.9
    bound = mean_loss_bound(logit_bound)
    assert abs(alone["loss"] - three["loss"]) <= bound + 2e-12 * alone["loss"], bound
    assert abs(alone["accuracy"] - net.accuracy(x, t)) * 10000 <= flips
    matrix = np.array(alone["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum(axis=1).tolist() == np.bincount(t).tolist()


@pytest.fixture
def keep_logging():
    """In-process commands set up the `mpinet` logger; put it back afterwards."""
    logger = logging.getLogger("mpinet")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def test_eval_prints_a_readable_report(checkpoint, mnist_h5, capsys, keep_logging):
    assert main(["eval", str(checkpoint), "--data", str(mnist_h5), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "/test: 10000 samples on 1 rank(s)" in out
    assert "accuracy 0.9" in out and "confusion matrix (rows: true label" in out
    assert len(out.splitlines()) == 3 + 1 + 10 + 2 + 10


def test_eval_of_a_bad_checkpoint_is_one_line(tmp_path, capsys, keep_logging):
    bad = tmp_path / "ckpt.h5"
    bad.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(bad)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"checkpoint {bad}: not a readable HDF5" in err


# -- predict -------------------------------------------------------------------------------


def test_predict_makes_a_photographed_digit_look_like_mnist(checkpoint, test_digits, tmp_path):
    digits, labels = test_digits
    paths = []
    for i, digit in enumerate(digits):
        paths.append(tmp_path / f"digit{i}.png")
        paths[-1].write_bytes(as_png(digit))
    np.save(tmp_path / "originals.npy", digits)
    job = run_job(mpinet_command() + ["predict", str(checkpoint), *map(str, paths),
                                      str(tmp_path / "originals.npy"), "--json", "--top", "2"])
    assert job.returncode == 0, job.output
    rows = json.loads(job.stdout)["predictions"]
    assert [r["input"] for r in rows[N_DIGITS:]] == [
        f"{tmp_path / 'originals.npy'}[{i}]" for i in range(N_DIGITS)]
    from_png = [r["label"] for r in rows[:N_DIGITS]]
    from_mnist = [r["label"] for r in rows[N_DIGITS:]]
    assert sum(a == b for a, b in zip(from_png, from_mnist, strict=True)) >= N_DIGITS - 1
    assert sum(a == b for a, b in zip(from_png, labels, strict=True)) >= N_DIGITS - 2
    assert all(len(r["top"]) == 2 and abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)


@pytest.mark.parametrize("fmt, mode, scale", [("PNG", "L", 5), ("JPEG", "L", 5),
                                              ("PPM", "L", 5), ("PNG", "RGBA", 5),
                                              ("PNG", "L", 40)])
def test_preprocessing_inverts_crops_and_centres(test_digits, fmt, mode, scale):
    digits, _ = test_digits
    for digit in digits[:N_DIGITS if scale < 10 else 3]:
        made = image_from_bytes(as_png(digit, scale, fmt=fmt, mode=mode))
        assert made.shape == (28, 28) and made.min() >= 0 and made.max() == 1
        rows, cols = np.indices(made.shape)
        centre = (rows * made).sum() / made.sum(), (cols * made).sum() / made.sum()
        assert np.allclose(centre, 14, atol=0.51), centre  # MNIST's centre of mass
        # The same picture as the original, give or take the rounding of one pixel's shift.
        r = max(np.corrcoef(np.roll(made, (dy, dx), (0, 1)).ravel(), digit.ravel())[0, 1]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert r > 0.9, f"{fmt} {mode}: correlation {r:.2f} with the MNIST original"


def test_the_text_output(checkpoint, test_digits, tmp_path, capsys):
    np.save(tmp_path / "two.npy", test_digits[0][:2].reshape(2, 784))
    assert main(["predict", str(checkpoint), str(tmp_path / "two.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'two.npy'}[0]: 7  (7 0.")


def write(path, content):
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, Image.Image):
        content.save(path)
    else:
        path.write_bytes(content)
    return path


BAD_INPUTS = {
    "text.png": (b"this is not an image", "not an image Pillow can read"),
    "cut.png": ("truncated", "cannot be decoded"),
    "blank.png": (Image.new("L", (60, 40), 250), "the image is blank"),
    "huge.png": (Image.new("L", (5000, 2), 0), "5000x2 pixels is too large"),
    "shape.npy": (np.zeros((3, 27, 27), np.uint8), r"shape \(3, 27, 27\); expected"),
    "range.npy": (np.full((1, 784), 3.0), "float pixels must be finite and in 0..1"),
    "empty.npy": (np.zeros((0, 784), np.uint8), "with n >= 1"),
    "text.npy": (np.array(["7"] * 784), "dtype <U1; expected numbers"),
    "pickle.npy": (b"\x93NUMPY garbage", "not a readable .npy array"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_line_errors(checkpoint, test_digits, tmp_path, capsys, name):
    content, message = BAD_INPUTS[name]
    if isinstance(content, str):  # "truncated": the start of a real PNG
        content = as_png(test_digits[0][0])[:200]
    path = write(tmp_path / name, content)
    assert main(["predict", str(checkpoint), str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("mpinet predict: error: ")
    assert str(path) in err
    assert __import__("re").search(message, err), err


def test_missing_file_and_bad_top(checkpoint, tmp_path, capsys):
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing.png")]) == 2
    assert "nothing.png: no such file" in capsys.readouterr().err
    assert main(["predict", str(checkpoint), str(tmp_path / "x.png"), "--top", "11"]) == 2
    assert "--top 11: expected 1..10" in capsys.readouterr().err


# -- serve ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(checkpoint):
    server = make_server(Predictor(checkpoint), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def request(url, body=None, content_type="application/octet-stream"):
    """(status, body as JSON or text); an HTTP error status is returned, not raised."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            code, data = response.status, response.read()
    except urllib.error.HTTPError as e:
        code, data = e.code, e.read()
    text = data.decode()
    return code, json.loads(text) if text.startswith("{") else text


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_serve_answers_concurrent_requests(server, checkpoint, test_digits):
    digits, _ = test_digits
    predictor = Predictor(checkpoint)
    pngs = [as_png(d) for d in digits]
    expected_png = [int(p.argmax()) for p in predictor.probabilities(
        np.stack([image_from_bytes(b) for b in pngs]))]
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
                code, body = request(server + "/predict", json.dumps(payload).encode(),
                                     "application/json")
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
    grown = (metric(after, "mpinet_serve_requests_total", endpoint="/predict", code="200")
             - metric(before, "mpinet_serve_requests_total", endpoint="/predict", code="200"))
    assert grown == 80
    assert metric(after, "mpinet_serve_request_duration_seconds_count", endpoint="/predict") >= 80


BAD_REQUESTS = [
    ("not json", b"{inputs: 1", "application/json", 400, "not valid JSON"),
    ("no inputs", b'{"images": []}', "application/json", 400, "expected {\"inputs\""),
    ("wrong shape", b"[[1, 2, 3]]", "application/json", 400, "shape (1, 3)"),
    ("ragged", b"[[1, 2], [3]]", "application/json", 400, "inputs: not a rectangular array"),
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
    assert (metric(after, "mpinet_serve_errors_total", endpoint="other")
            - metric(before, "mpinet_serve_errors_total", endpoint="other")) == 1
    assert "mpinet_serve_request_duration_seconds_bucket" in after


def test_serve_command_stops_cleanly_on_sigterm(checkpoint):
    proc = subprocess.Popen(mpinet_command() + ["serve", str(checkpoint), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=job_environment())
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
