"""Inference from a checkpoint: `mpinet eval` (alone and under mpiexec) and `predict`.

A small MLP is trained in-process for a few hundred steps on the real MNIST and saved the
way the training loop saves it (tests/worker/conftest.py); the commands then run on that file.
"""

import json

import h5py
import numpy as np
import pytest
from inference_support import N_DIGITS, as_png
from numerics import affine_relu_logit_bound, ambiguous_samples, mean_loss_bound
from PIL import Image
from support import mpiexec, mpinet_command, run_job

from mpinet.data.images import image_from_bytes
from mpinet.model import load
from mpinet.worker.cli import main

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
    three = eval_json(
        [mpiexec(), "-n", "3"] + mpinet_command() + ["eval", str(checkpoint), "--json"]
    )
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
    layers = [
        (
            net.params[f"affine{i}.W"].astype(np.float64),
            net.params[f"affine{i}.b"].astype(np.float64),
        )
        for i in (1, 2)
    ]
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
    job = run_job(
        mpinet_command()
        + [
            "predict",
            str(checkpoint),
            *map(str, paths),
            str(tmp_path / "originals.npy"),
            "--json",
            "--top",
            "2",
        ]
    )
    assert job.returncode == 0, job.output
    rows = json.loads(job.stdout)["predictions"]
    assert [r["input"] for r in rows[N_DIGITS:]] == [
        f"{tmp_path / 'originals.npy'}[{i}]" for i in range(N_DIGITS)
    ]
    from_png = [r["label"] for r in rows[:N_DIGITS]]
    from_mnist = [r["label"] for r in rows[N_DIGITS:]]
    assert sum(a == b for a, b in zip(from_png, from_mnist, strict=True)) >= N_DIGITS - 1
    assert sum(a == b for a, b in zip(from_png, labels, strict=True)) >= N_DIGITS - 2
    assert all(len(r["top"]) == 2 and abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)


@pytest.mark.parametrize(
    "fmt, mode, scale",
    [("PNG", "L", 5), ("JPEG", "L", 5), ("PPM", "L", 5), ("PNG", "RGBA", 5), ("PNG", "L", 40)],
)
def test_preprocessing_inverts_crops_and_centres(test_digits, fmt, mode, scale):
    digits, _ = test_digits
    for digit in digits[: N_DIGITS if scale < 10 else 3]:
        made = image_from_bytes(as_png(digit, scale, fmt=fmt, mode=mode))
        assert made.shape == (28, 28) and made.min() >= 0 and made.max() == 1
        rows, cols = np.indices(made.shape)
        centre = (rows * made).sum() / made.sum(), (cols * made).sum() / made.sum()
        assert np.allclose(centre, 14, atol=0.51), centre  # MNIST's centre of mass
        # The same picture as the original, give or take the rounding of one pixel's shift.
        r = max(
            np.corrcoef(np.roll(made, (dy, dx), (0, 1)).ravel(), digit.ravel())[0, 1]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
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
    "huge.png": (
        Image.new("L", (5000, 2), 0),
        "5000x2 pixels; expected at most 4096x4096; scale it down",
    ),
    "shape.npy": (np.zeros((3, 27, 27), np.uint8), r"shape \(3, 27, 27\); expected"),
    "range.npy": (
        np.full((1, 784), 3.0),
        r"float pixels outside 0..1 \(or not finite\); expected 0..1; scale them",
    ),
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
    assert capsys.readouterr().err == (
        "mpinet predict: error: --top 11: out of range; expected "
        "1..10 (the network's classes); pass a K in that range\n"
    )
