"""Smoke tests of examples/: each script's main() at its --quick size, its key result
asserted, its progress lines and its figures written; every --help; MNIST from mpinet's
cache. examples/ is not a package, so scripts load by path."""

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import REPO, job_environment, mpiexec, run_job, shared_data_dir
from threadpoolctl import threadpool_limits

from mpinet.data import prepare
from mpinet.data.prepare import default_out

EXAMPLES = REPO / "examples"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # for `from common import ...`


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    """Never the user's real cache: $XDG_CACHE_HOME in a temporary directory (subprocesses
    inherit it), the .gz files from ../shared/data."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("MPINET_DATA_SOURCE", str(shared_data_dir()))
    return cache / "mpinet"


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    # Small matrices: a second BLAS thread only adds spinning, badly so on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def figures_checked(examples_on_path, monkeypatch):
    """Every figure an example saves is first checked: no two panels (or colorbars) overlap,
    titles, tick labels and axis labels included."""
    import common

    saved = common.save

    def save(fig, out, name):
        assert not overlapping_axes(fig), f"{name}: these panels overlap: {overlapping_axes(fig)}"
        return saved(fig, out, name)

    monkeypatch.setattr(common, "save", save)


def overlapping_axes(fig):
    """Pairs of axes whose drawn extents (with their labels) overlap by more than a pixel."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    boxes = [(ax.get_title() or ax.get_label(), ax.get_tightbbox(renderer)) for ax in fig.axes]
    return [
        (name_a, name_b)
        for i, (name_a, a) in enumerate(boxes)
        for name_b, b in boxes[i + 1 :]
        if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1
    ]


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, tmp_path, *extra):
    return example(name).main(["--quick", "--out", str(tmp_path), *map(str, extra)])


def pngs(tmp_path):
    return sorted(p.name for p in tmp_path.glob("*.png"))


def assert_progress(err, label, total):
    """stderr has the lines `label: step k/total, loss x, t s`, one every total // 10 steps."""
    found = re.findall(
        rf"^{re.escape(label)}: step (\d+)/{total}, loss \S+, [\d.]+ s$", err, flags=re.MULTILINE
    )
    every = max(1, total // 10)
    assert [int(k) for k in found] == sorted({*range(every, total + 1, every), total}), err


TRUTH_TABLES = {"AND": [0, 0, 0, 1], "NAND": [1, 1, 1, 0], "OR": [0, 1, 1, 1], "XOR": [0, 1, 1, 0]}


def test_perceptrons(tmp_path):
    tables = run("01_perceptrons", tmp_path)
    assert tables == TRUTH_TABLES
    assert pngs(tmp_path) == ["gates.png"]


def test_every_perceptron_panel_shades_where_its_gate_outputs_1():
    fig = example("01_perceptrons").figure(TRUTH_TABLES)
    for ax in fig.axes:
        shaded = ax.collections[0]  # the contourf of the gate on a grid: levels 0 and 1
        assert len(shaded.get_paths()) == 2 and shaded.get_paths()[1].vertices.size, ax.title
    xor_region = fig.axes[3].collections[0].get_paths()[1]
    inside = xor_region.contains_points([[0, 1], [1, 0], [0, 0], [1, 1]])
    assert inside.tolist() == [True, True, False, False]  # the band between the two lines


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


def test_optimizers(tmp_path, mnist_h5, capsys):
    final = run("06_optimizers", tmp_path, "--data", mnist_h5)
    err = capsys.readouterr().err
    for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        assert_progress(err, name, 30)
    assert set(final) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    assert all(np.isfinite(v) for v in final.values())
    assert final["adam"] < final["sgd"]
    assert pngs(tmp_path) == ["losses.png"]


def test_weight_init(tmp_path, mnist_h5, capsys):
    result = run("07_weight_init", tmp_path, "--data", mnist_h5)
    err = capsys.readouterr().err
    for init in ("std 0.01", "Xavier", "He"):
        assert_progress(err, f"init {init}", 30)
    sigmoid, relu = result["spread"]["sigmoid"], result["spread"]["relu"]
    assert sigmoid["std 0.01"] < 0.05 < sigmoid["Xavier"]  # std 0.01: all units alike
    assert relu["std 0.01"] < 1e-3 and 0.3 < relu["He"] < 3  # He keeps ReLU's scale
    assert result["final_loss"]["He"] < result["final_loss"]["std 0.01"]
    assert pngs(tmp_path) == ["activations.png", "training.png"]


def test_batchnorm(tmp_path, mnist_h5, capsys):
    results = run("08_batchnorm", tmp_path, "--data", mnist_h5)
    err = capsys.readouterr().err
    for label in ("std 1 batchnorm", "std 1 plain", "std 0.0001 batchnorm"):
        assert_progress(err, label, 40)  # 4 epochs of 10 steps
    assert len(results) == 4
    with_bn, without = results[(1.0, True)][0], results[(1.0, False)][0]
    assert with_bn > without + 0.05  # std 1: the plain net is stuck, batchnorm learns
    assert pngs(tmp_path) == ["batchnorm.png"]


def test_overfitting(tmp_path, mnist_h5, capsys):
    results = run("09_overfitting", tmp_path, "--data", mnist_h5)
    err = capsys.readouterr().err
    for label in ("plain", "weight decay 0.1", "dropout 0.2"):
        assert_progress(err, label, 60)  # 20 epochs of 3 steps
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
    command = [
        mpiexec(),
        "-n",
        "4",
        sys.executable,
        str(script),
        "--quick",
        "--group-size",
        "2",
        "--data",
        str(mnist_val_h5),
        "--out",
        str(tmp_path),
    ]
    job = run_job(command, timeout=120, env=job_environment())
    assert job.returncode == 0, job.output
    assert "4 trials on 2 group(s) of 2 rank(s)" in job.stdout
    rows = [line.split() for line in job.stdout.splitlines() if line[:5].strip().isdigit()]
    assert sorted(int(r[1]) for r in rows) == [0, 1, 2, 3]  # every trial exactly once
    assert {int(r[0]) for r in rows} == {0, 2}  # run by the roots of the two groups
    assert pngs(tmp_path) == ["search.png"]
    # the search ran as `mpinet search`: a run directory per trial, trials.jsonl, best.toml
    trials = [json.loads(line) for line in (tmp_path / "search" / "trials.jsonl").open()]
    assert [t["status"] for t in trials] == ["ok"] * 4 and all(t["steps"] == 20 for t in trials)
    assert all((Path(t["run_dir"]) / "summary.json").is_file() for t in trials)
    assert (tmp_path / "search" / "best.toml").is_file()


def test_cnn_filters(tmp_path, mnist_h5, capsys):
    result = run("11_cnn_filters", tmp_path, "--data", mnist_h5)
    assert_progress(capsys.readouterr().err, "simple_cnn", 30)
    assert result["change"] > 0.1 and result["accuracy"] > 0.3
    assert pngs(tmp_path) == ["filters_after.png", "filters_before.png"]


def test_transfer(tmp_path, mnist_h5):
    table = run("12_transfer", tmp_path, "--data", mnist_h5)  # Fashion: the private cache
    assert len(table) == 8 and all(0 < row["accuracy"] <= 1 for row in table.values())
    frozen = {
        key: row["frozen_unchanged"] for key, row in table.items() if "frozen_unchanged" in row
    }
    assert len(frozen) == 4 and all(kept is True for kept in frozen.values())  # bitwise
    assert pngs(tmp_path) == ["transfer.png"]


# --- the command line: --help, progress on a terminal, the data file -----------------------


def help_blocks(script):
    """(the description, [each option's entry: flags and help text]) from `script --help`."""
    job = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{script}.py"), "--help"],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert job.returncode == 0, job.stderr
    usage, description, options = job.stdout.split("\n\n")[:3]
    entries = re.split(r"\n(?=  -)", options.split("\n", 1)[1])  # after the "options:" line
    description = re.sub(r"(?<=\w-)\n\s*", "", description)  # argparse wraps after hyphens
    return " ".join(description.split()), [" ".join(e.split()) for e in entries]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_the_docstring_paragraph_and_every_default(script):
    description, entries = help_blocks(script)
    first_paragraph = example(script).__doc__.split("\n\n")[0]
    assert description == " ".join(first_paragraph.split())  # whole, not a cut fragment
    assert description.endswith(".") and description[0].isupper()
    assert {"-h,", "--out", "--threads", "--quick"} <= {entry.split()[0] for entry in entries}
    for entry in entries[1:]:
        assert re.search(r"\S \(default: [^)]+\)", entry), entry  # a help text and its default


def test_progress_is_a_tqdm_bar_on_a_terminal():
    import common

    stream = io.StringIO()
    stream.isatty = lambda: True  # what Progress asks before it draws a bar
    progress = common.Progress(20, "sgd", stream=stream)
    for step in range(1, 21):
        progress.update(step, 0.5)
    progress.close()
    assert re.search(r"sgd: +0%\|", stream.getvalue())  # tqdm's bar, not progress lines
    assert "step" not in stream.getvalue()


def test_mnist_examples_prepare_mpinet_cache_once_and_reuse_it(tmp_path, private_cache):
    run("06_optimizers", tmp_path / "a")  # no --data: the cache, prepared on first use
    path = private_cache / "mnist.h5"
    assert path == default_out("mnist") and sorted(os.listdir(private_cache)) == ["mnist.h5"]
    before = path.stat()
    run("11_cnn_filters", tmp_path / "b")  # the second example reuses the file as it is
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    job = subprocess.run(
        [sys.executable, "-m", "mpinet.worker", "prepare"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.stdout.startswith(f"kept {path} (valid"), job.stdout + job.stderr


def test_hyperparameter_search_caches_its_validation_split(tmp_path, private_cache, capsys):
    results = run("10_hyperparameter_search", tmp_path)  # one process: LocalComm
    assert sorted(r[0] for r in results) == [0, 1, 2, 3]
    with h5py.File(private_cache / "mnist-val5000.h5", "r") as f:
        assert (len(f["train/labels"]), len(f["val/labels"])) == (55000, 5000)
    assert [
        json.loads(line)["trial"] for line in (tmp_path / "search" / "trials.jsonl").open()
    ] == [
        0,
        1,
        2,
        3,
    ]
    assert pngs(tmp_path) == ["search.png"]


@pytest.mark.parametrize(
    "script, val",
    [("06_optimizers", ""), ("10_hyperparameter_search", "--val 5000 ")],
    ids=["06", "10"],
)
def test_a_missing_data_file_is_one_line_and_never_created(
    tmp_path, private_cache, capsys, script, val
):
    missing = tmp_path / "mnist.h5"
    with pytest.raises(SystemExit, match="^2$"):  # argparse's exit status for a usage error
        run(script, tmp_path, "--data", missing)
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            f"error: argument --data: {missing}: no such file; expected an MNIST HDF5 file made by "
            f"`mpinet prepare`; run `mpinet prepare {val}--out {missing}`, or leave --data out to "
            f"use the cache"
        )
    )
    assert not missing.exists() and not private_cache.exists()


def test_hyperparameter_search_needs_a_val_split(tmp_path, mnist_h5, capsys):
    with pytest.raises(SystemExit, match="^2$"):
        run("10_hyperparameter_search", tmp_path, "--data", mnist_h5)
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            f"error: argument --data: {mnist_h5}: has no /val split; expected a file made by "
            f"`mpinet prepare --val N`; run `mpinet prepare --val 5000 --out FILE.h5` and pass "
            f"that file"
        )
    )
