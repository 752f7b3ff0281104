"""`mpinet plot RUN_DIR` end to end, on a run directory a real short `mpinet train` made."""

import json
import os
import shutil
import subprocess

import pytest
from support import mpinet_command

from mpinet.worker import plots

PNG = b"\x89PNG\r\n\x1a\n"
ALL = (*plots.CURVES, *plots.PREDICTIONS)
STEPS, LOG_EVERY = 60, 10


def mpinet(*args):
    return subprocess.run(
        [*mpinet_command(), *map(str, args)], capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_h5):
    """(run directory, the finished `mpinet train`): 60 steps of the MLP, an evaluation every
    20 steps, a steps.jsonl line every 10."""
    run = tmp_path_factory.mktemp("plots") / "20261201-2040"
    done = mpinet(
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run,
        "--set",
        "model.name='mlp'",
        "--set",
        f"train.max_steps={STEPS}",
        "--set",
        "train.eval_every=20",
        "--set",
        f"train.log_every={LOG_EVERY}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


@pytest.fixture
def copy_of_run(trained, tmp_path):
    """A copy each test may change; the same name (titles carry it)."""
    copy = tmp_path / trained[0].name
    shutil.copytree(trained[0], copy, symlinks=True)
    return copy


def make_stale(run):
    """Old contents and an old mtime: a rewritten file shows both changed."""
    for name in ALL:
        (run / name).write_bytes(b"stale")
        os.utime(run / name, (1e9, 1e9))


def assert_rewritten(run, names=ALL):
    for name in names:
        path = run / name
        assert path.read_bytes()[:8] == PNG, path
        assert path.stat().st_size > 10_000, path
        assert path.stat().st_mtime > 1e9 + 1, path


def test_the_end_of_a_run_draws_the_four_plots_and_says_so(trained):
    run, done = trained
    for name in ALL:
        assert (run / name).read_bytes()[:8] == PNG, name
    assert f"plots: {', '.join(ALL)} in {run}" in done.stderr
    assert "plots: skipped" not in done.stderr


def test_a_short_run_plots_its_loss_at_every_logged_step(trained):
    run, _ = trained
    rows = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert all({"step", "epoch", "train_loss", "lr"} <= set(r) for r in rows)
    train = plots.draw(run)[0]["loss.png"].axes[0].get_lines()[0]
    assert len(train.get_xdata()) == len(rows)


def test_mpinet_plot_rewrites_the_four_plots_from_the_latest_checkpoint(copy_of_run):
    make_stale(copy_of_run)
    done = mpinet("plot", copy_of_run)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(copy_of_run / name) for name in ALL]
    assert "skipped" not in done.stdout + done.stderr
    assert_rewritten(copy_of_run)


def test_mpinet_plot_takes_a_checkpoint_and_a_data_file(copy_of_run, mnist_h5):
    checkpoint = plots.checkpoint_for(copy_of_run)
    make_stale(copy_of_run)
    done = mpinet("plot", copy_of_run, "--checkpoint", checkpoint, "--data", mnist_h5)
    assert done.returncode == 0, done.stderr
    assert_rewritten(copy_of_run)


def test_mpinet_plot_draws_a_run_from_before_steps_jsonl(copy_of_run):
    (copy_of_run / "steps.jsonl").unlink()
    make_stale(copy_of_run)
    done = mpinet("plot", copy_of_run)
    assert done.returncode == 0, done.stderr
    assert_rewritten(copy_of_run)


def test_without_a_checkpoint_the_prediction_plots_are_skipped_and_said_so(copy_of_run):
    shutil.rmtree(copy_of_run / "checkpoints")
    make_stale(copy_of_run)
    done = mpinet("plot", copy_of_run)
    assert done.returncode == 0, done.stderr
    assert (
        f"mpinet plot: skipped confusion.png, misclassified.png: "
        f"{copy_of_run / 'checkpoints'}: no checkpoint" in done.stdout
    )
    assert_rewritten(copy_of_run, plots.CURVES)
    assert (copy_of_run / "confusion.png").read_bytes() == b"stale"


def test_a_missing_checkpoint_file_is_a_one_line_error(copy_of_run):
    done = mpinet("plot", copy_of_run, "--checkpoint", copy_of_run / "nope.h5")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"--checkpoint {copy_of_run / 'nope.h5'}: no such file" in done.stderr


def test_a_directory_without_history_is_a_one_line_error(tmp_path):
    done = mpinet("plot", tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{tmp_path}: no history.jsonl; expected a run directory" in done.stderr
