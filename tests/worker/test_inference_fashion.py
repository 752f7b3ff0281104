"""Fashion-MNIST's class names in `eval`, `predict` and `serve` output: the data set is the
checkpoint's stored config (data.dataset); MNIST keeps its digits."""

import json
import threading

import h5py
import numpy as np
import pytest
from inference_support import request
from support import mpinet_command, run_job

from mpinet.data import class_names
from mpinet.worker.predict import Predictor
from mpinet.worker.serve import make_server

NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]  # zalandoresearch/fashion-mnist, in label order


@pytest.fixture(scope="module")
def articles(fashion_h5):
    with h5py.File(fashion_h5, "r") as f:
        return f["test/images"][:12], f["test/labels"][:12]


def mpinet(*args):
    job = run_job(mpinet_command() + [str(a) for a in args], timeout=60)
    assert job.returncode == 0, job.output
    return job.stdout


def expected_top(checkpoint, images, k=3):
    """The checkpoint's own ranking of the classes of each image, computed in-process the
    way the commands compute it (the same arithmetic, so the same printed digits)."""
    proba = Predictor(checkpoint).probabilities(images / 255.0)
    return np.argsort(-proba, axis=1, kind="stable")[:, :k], proba


def test_class_names_are_fashion_mnists():
    assert class_names("fashion-mnist") == NAMES
    assert class_names("mnist") == [str(k) for k in range(10)]


def test_predict_prints_the_article_names(fashion_checkpoint, articles, tmp_path):
    images, labels = articles
    np.save(tmp_path / "shoes.npy", images)
    lines = mpinet("predict", fashion_checkpoint, tmp_path / "shoes.npy").splitlines()
    top, proba = expected_top(fashion_checkpoint, images)
    assert len(lines) == len(images)
    for i, (line, order) in enumerate(zip(lines, top, strict=True)):
        ranked = ", ".join(f"{NAMES[k]} {proba[i, k]:.4f}" for k in order)
        assert line == f"{tmp_path / 'shoes.npy'}[{i}]: {order[0]} {NAMES[order[0]]}  ({ranked})"
    assert labels[0] == 9 and lines[0].split(": ", 1)[1].startswith("9 Ankle boot  (Ankle boot")
    assert sum(top[:, 0] == labels) >= 9  # about 82% right: the network learned the articles


def test_predict_json_has_a_name_beside_each_label(fashion_checkpoint, articles, tmp_path):
    images, _ = articles
    np.save(tmp_path / "a.npy", images[:4])
    out = json.loads(
        mpinet("predict", fashion_checkpoint, tmp_path / "a.npy", "--json", "--top", "2")
    )
    assert out["dataset"] == "fashion-mnist" and out["checkpoint"] == str(fashion_checkpoint)
    top, _ = expected_top(fashion_checkpoint, images[:4], k=2)
    for row, order in zip(out["predictions"], top, strict=True):
        assert (row["label"], row["name"]) == (order[0], NAMES[order[0]])
        assert [(t["label"], t["name"]) for t in row["top"]] == [(k, NAMES[k]) for k in order]


def test_eval_reports_per_class_accuracy_by_name(fashion_checkpoint, fashion_h5):
    report = json.loads(mpinet("eval", fashion_checkpoint, "--json"))
    assert report["class_names"] == NAMES and report["data"] == str(fashion_h5)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == report["samples"] == 10000 and 0.75 < report["accuracy"] < 0.95
    text = mpinet("eval", fashion_checkpoint).splitlines()
    assert text[3] == "per-class accuracy:"
    for label, line in enumerate(text[4:14]):
        row = matrix[label]
        assert line == (
            f"  {label} {NAMES[label]:<11}  {row[label] / row.sum():.4f}  "
            f"({row[label]}/{row.sum()})"
        )


def test_eval_of_an_mnist_network_on_fashion_data_is_refused(checkpoint, fashion_h5):
    job = run_job(mpinet_command() + ["eval", str(checkpoint), "--data", str(fashion_h5)])
    assert job.returncode == 2
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"ERROR data file {fashion_h5}: holds fashion-mnist; expected mnist, the data set "
        f"checkpoint {checkpoint} was trained on; pass a mnist file to --data"
    ), lines


def test_serve_answers_with_the_name(fashion_checkpoint, articles):
    images, _ = articles
    server = make_server(Predictor(fashion_checkpoint), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        body = json.dumps({"inputs": images[:3].reshape(3, 784).tolist()}).encode()
        code, answer = request(url + "/predict", body, "application/json")
        top, _ = expected_top(fashion_checkpoint, images[:3], k=1)
        assert code == 200
        assert [(p["label"], p["name"]) for p in answer["predictions"]] == [
            (k, NAMES[k]) for k in top[:, 0]
        ]
        assert request(url + "/healthz")[1]["dataset"] == "fashion-mnist"
    finally:
        server.shutdown()
        server.server_close()
