"""The Python API of README's "Python API" and "Inference": predict gives scores, classify
labels; integer input is refused with one line; limit_threads caps BLAS."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numerics import unit_roundoff

from mpinet.model import build

METHODS = ["forward", "predict", "classify", "predict_proba", "loss", "accuracy", "evaluate"]


def call(net, method, x):
    t = np.zeros(len(x), np.int64)  # labels stay integers
    if method in ("loss", "accuracy", "evaluate"):
        return getattr(net, method)(x, t)
    return getattr(net, method)(x)


@pytest.fixture
def net():
    return build({"name": "mlp", "hidden": [20]}, seed=1)


@pytest.fixture
def pixels():
    return np.random.default_rng(2).integers(0, 256, (30, 784), dtype=np.uint8)


def test_predict_gives_scores_and_classify_their_argmax_as_int64_labels(net, pixels):
    x = pixels / np.float32(255)
    y = net.predict(x, batch_size=7)
    assert y.shape == (30, 10) and y.dtype == np.float32
    # Scores, not probabilities: the last Affine's output, negative entries included.
    assert (y < 0).any() and not np.allclose(y.sum(axis=1), 1)
    labels = net.classify(x, batch_size=7)
    assert labels.dtype == np.int64 and labels.shape == (30,)
    assert np.array_equal(labels, y.argmax(axis=1))  # same batches: the very same scores
    assert net.classify(x[:0]).shape == (0,)
    # predict_proba is the softmax of those scores. In float32, each probability is off by
    # the rounding of (y - max) (|y - max| * u, relative, through exp), of exp (2u), of the
    # sum of 10 terms (γ(9) ≈ 9u) and of the division (u).
    y64 = y.astype(np.float64)
    reference = np.exp(y64 - y64.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    spread = np.abs(y64 - y64.max(axis=1, keepdims=True))
    bound = (spread + 12) * unit_roundoff(np.float32) * reference
    assert np.all(np.abs(net.predict_proba(x, batch_size=7) - reference) <= bound)


@pytest.mark.parametrize("method", METHODS)
def test_uint8_pixels_are_refused_with_one_line_saying_divide_by_255(net, pixels, method):
    with pytest.raises(ValueError) as error:
        call(net, method, pixels)
    message = str(error.value)
    assert message == (
        "Network input: got uint8 pixels (0..255); expected floats in [0, 1]; "
        "divide by 255 first (x / 255), as mpinet's data pipeline does"
    )


@pytest.mark.parametrize(
    "x",
    [np.ones((3, 784), np.int64), [[1] * 784] * 3, np.ones((3, 784), np.uint16)],
    ids=["int64", "list", "uint16"],
)
def test_any_integer_input_is_refused(net, x):
    with pytest.raises(
        ValueError,
        match=r"^Network input: got (int64|uint16) integers; "
        r"expected floats \(pixels in \[0, 1\]\); convert",
    ):
        net.classify(x)


def test_pixels_divided_by_255_are_accepted_as_floats(net, pixels):
    x = pixels / 255  # float64: cast to the network's float32 like any float input
    assert np.array_equal(net.classify(x), net.classify(x.astype(np.float32)))
    loss = net.loss(x, np.zeros(30, np.int64))
    assert np.isfinite(loss)


REPORT = """
import json
from threadpoolctl import threadpool_info
from mpinet.model import build, limit_threads, load  # the README's imports still work

def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

before = blas()
print(json.dumps({"before": before, "set": limit_threads(%s), "after": blas()}))
"""


def blas_report(arguments="", **env):
    """Run limit_threads() in a fresh process -> the finished job; stdout is a JSON report.

    OPENBLAS_NUM_THREADS=2 makes the starting point 2 on any machine, so 1 after the call can
    only come from limit_threads."""
    unset = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MPINET_BLAS_THREADS")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", REPORT % arguments],
        env={**base, "OPENBLAS_NUM_THREADS": "2", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_limit_threads_reads_MPINET_BLAS_THREADS_and_caps_blas():
    job = blas_report(MPINET_BLAS_THREADS="1")
    assert job.returncode == 0, job.stderr
    report = json.loads(job.stdout)
    assert report["before"] and all(n == 2 for n in report["before"])
    assert report["set"] == 1 and report["after"] == [1] * len(report["before"])


def test_limit_threads_leaves_blas_alone_when_the_variable_is_unset():
    job = blas_report()
    assert job.returncode == 0, job.stderr
    report = json.loads(job.stdout)
    assert report["set"] is None and report["after"] == report["before"]


@pytest.mark.parametrize("variable, expected", [("", 1), ("3", 3)], ids=["unset", "set"])
def test_limit_threads_default_applies_only_when_the_variable_is_unset(variable, expected):
    job = blas_report("None, default=1", MPINET_BLAS_THREADS=variable)  # as the examples call it
    assert job.returncode == 0, job.stderr
    report = json.loads(job.stdout)
    assert report["set"] == expected and report["after"] == [expected] * len(report["before"])


def test_a_bad_MPINET_BLAS_THREADS_is_one_line():
    job = blas_report(MPINET_BLAS_THREADS="two")
    assert job.returncode != 0
    assert job.stderr.strip().splitlines()[-1] == (
        "ValueError: MPINET_BLAS_THREADS: got 'two'; expected a whole number >= 1; set it to "
        "e.g. 1, or unset it to leave BLAS alone"
    )


def test_limit_threads_refuses_a_bad_n():
    from mpinet.model import limit_threads

    with pytest.raises(ValueError, match=r"^limit_threads: got n=0; expected a whole number"):
        limit_threads(0)
