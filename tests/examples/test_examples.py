"""Smoke tests of examples/: each script's main() at its --quick size, its key result
asserted and its figures written. examples/ is not a package, so scripts load by path."""

import importlib.util
import sys

import numpy as np
import pytest
from support import REPO, job_environment, mpiexec, run_job
from threadpoolctl import threadpool_limits

from mpinet.data import prepare

EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # for `from common import ...`


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    # Small matrices: a second BLAS thread only adds spinning, badly so on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def run(name, tmp_path, *extra):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--quick", "--out", str(tmp_path), *map(str, extra)])


def pngs(tmp_path):
    return sorted(p.name for p in tmp_path.glob("*.png"))


def test_perceptrons(tmp_path):
    tables = run("01_perceptrons", tmp_path)
    assert tables == {"AND": [0, 0, 0, 1], "NAND": [1, 1, 1, 0], "OR": [0, 1, 1, 1],
                      "XOR": [0, 1, 1, 0]}
    assert pngs(tmp_path) == ["gates.png"]


def test_three_layer_network(tmp_path):
    y = run("02_three_layer", tmp_path)
    np.testing.assert_allclose(y, [0.31682708, 0.69627909], rtol=1e-7)
    assert pngs(tmp_path) == ["outputs.png"]


def test_regression_fits(tmp_path):
    rmse = run("03_regression", tmp_path)
    assert rmse < 3.0  # targets span [-120, 120]; the notes' setting ends at ~25
    assert pngs(tmp_path) == ["fit.png"]


def test_numerical_differentiation(tmp_path):
    errors = run("04_numerical_diff", tmp_path)
    assert errors[1e-50] == (0.2, 0.2)  # x + 1e-50 == x: the derivative comes out 0
    forward, central = errors[1e-4]
    assert central < 1e-10 < 1e-7 < forward < 1e-5
    assert pngs(tmp_path) == ["errors.png"]


def test_gradient_check(tmp_path):
    summary = run("05_gradient_check", tmp_path)
    assert len(summary) == 4
    for label, (rel, abs_err) in summary.items():
        assert abs_err < 1e-6, label
        if "batchnorm" not in label:  # see the script: a bias before BN has gradient 0
            assert rel < 1e-5, label
    assert pngs(tmp_path) == ["errors.png"]


def test_optimizers(tmp_path, mnist_h5):
    final = run("06_optimizers", tmp_path, "--data", mnist_h5)
    assert set(final) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    assert all(np.isfinite(v) for v in final.values())
    assert final["adam"] < final["sgd"]
    assert pngs(tmp_path) == ["losses.png"]


def test_weight_init(tmp_path, mnist_h5):
    result = run("07_weight_init", tmp_path, "--data", mnist_h5)
    sigmoid, relu = result["spread"]["sigmoid"], result["spread"]["relu"]
    assert sigmoid["std 0.01"] < 0.05 < sigmoid["Xavier"]  # std 0.01: all units alike
    assert relu["std 0.01"] < 1e-3 and 0.3 < relu["He"] < 3  # He keeps ReLU's scale
    assert result["final_loss"]["He"] < result["final_loss"]["std 0.01"]
    assert pngs(tmp_path) == ["activations.png", "training.png"]


def test_batchnorm(tmp_path, mnist_h5):
    results = run("08_batchnorm", tmp_path, "--data", mnist_h5)
    assert len(results) == 4
    with_bn, without = results[(1.0, True)][0], results[(1.0, False)][0]
    assert with_bn > without + 0.05  # std 1: the plain net is stuck, batchnorm learns
    assert pngs(tmp_path) == ["batchnorm.png"]


def test_overfitting(tmp_path, mnist_h5):
    results = run("09_overfitting", tmp_path, "--data", mnist_h5)
    train_acc, test_acc = results["plain"]
    assert train_acc > test_acc + 0.05  # 300 samples: the plain net already overfits
    assert pngs(tmp_path) == ["overfitting.png"]


@pytest.fixture(scope="session")
def mnist_val_h5(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist-val") / "mnist-val.h5"
    return prepare("mnist", source=shared_data / "mnist", out=out, val=5000)


@pytest.mark.mpi
def test_hyperparameter_search_on_4_ranks(tmp_path, mnist_val_h5):
    if mpiexec() is None:
        pytest.skip("no mpiexec")
    script = EXAMPLES / "10_hyperparameter_search.py"
    command = [mpiexec(), "-n", "4", sys.executable, str(script), "--quick", "--group-size",
               "2", "--data", str(mnist_val_h5), "--out", str(tmp_path)]
    job = run_job(command, timeout=120, env=job_environment())
    assert job.returncode == 0, job.output
    assert "4 trials on 2 group(s) of 2 rank(s)" in job.stdout
    rows = [line.split() for line in job.stdout.splitlines() if line[:5].strip().isdigit()]
    assert sorted(int(r[1]) for r in rows) == [0, 1, 2, 3]  # every trial exactly once
    assert {int(r[0]) for r in rows} == {0, 2}  # run by the roots of the two groups
    assert pngs(tmp_path) == ["search.png"]


def test_cnn_filters(tmp_path, mnist_h5):
    result = run("11_cnn_filters", tmp_path, "--data", mnist_h5)
    assert result["change"] > 0.1 and result["accuracy"] > 0.3
    assert pngs(tmp_path) == ["filters_after.png", "filters_before.png"]
