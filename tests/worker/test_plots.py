"""Plots: real PNG files from a run directory, at the end of a run and with `mpinet plot`."""

import json
import subprocess

import pytest
from support import mpinet_command

from mpinet.model import build
from mpinet.worker import plots
from mpinet.worker.config import load_config, write_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path, mnist_h5):
    """A run directory as `mpinet train` leaves it: config.toml and history.jsonl."""
    run = tmp_path / "run"
    run.mkdir()
    write_config(load_config(None, ["model.name='mlp'", f"data.path={str(mnist_h5)!r}"]), run)
    rows = [{"epoch": e, "step": 100 * e, "train_loss": 1 / e, "test_loss": 1.1 / e,
             "train_accuracy": 1 - 0.1 / e, "test_accuracy": 1 - 0.12 / e, "lr": 0.001,
             "samples_per_second": 5000.0, "elapsed_seconds": 2.0 * e, "test_samples": 10000}
            for e in (1, 2, 3)]
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def assert_png(path):
    assert path.read_bytes()[:8] == PNG, path
    assert path.stat().st_size > 2000, path


def test_the_end_of_a_run_draws_all_four_plots(run_dir):
    written, skipped = plots.write_plots(run_dir, net=build({"name": "mlp"}))
    assert skipped == {}
    assert [p.name for p in written] == [*plots.CURVES, *plots.PREDICTIONS]
    for path in written:
        assert_png(path)
    assert not list(run_dir.glob("*.tmp"))


def test_without_a_checkpoint_the_prediction_plots_are_skipped_and_said_so(run_dir):
    done = subprocess.run([*mpinet_command(), "plot", str(run_dir)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "skipped confusion.png, misclassified.png: no checkpoint in" in done.stdout
    for name in plots.CURVES:
        assert_png(run_dir / name)
    assert not (run_dir / "confusion.png").exists()


def test_mpinet_plot_uses_the_latest_checkpoint(run_dir):
    """A checkpoint saved as training saves it (worker/checkpoints.py: `latest` pointer)."""
    from mpinet.worker.checkpoints import CheckpointDir

    net = build({"name": "mlp"}, seed=3)
    CheckpointDir(run_dir).save(net, None, {"step": 300})
    done = subprocess.run([*mpinet_command(), "plot", str(run_dir)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "skipped" not in done.stdout + done.stderr
    for name in (*plots.CURVES, *plots.PREDICTIONS):
        assert_png(run_dir / name)
    assert plots.latest_checkpoint(run_dir).name == "ckpt-00000300.h5"


def test_a_directory_without_history_is_a_one_line_error(tmp_path):
    done = subprocess.run([*mpinet_command(), "plot", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "holds no history.jsonl" in done.stderr
