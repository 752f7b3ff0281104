"""The checkpoint directory: names, the `latest` pointer, pruning, resuming, and SIGKILL."""

import logging
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import job_environment

from mpinet.data.atomic import TEMPORARY_GLOB
from mpinet.model import build
from mpinet.model.checkpoint import CheckpointError, read
from mpinet.model.optimizers import create
from mpinet.worker.checkpoint_dir import CheckpointDir, find_resume

SPEC = {"name": "mlp", "hidden": [20]}
SCRIPT = Path(__file__).parent / "scripts" / "save_loop.py"


def save_steps(checkpoints, steps, accuracies=None):
    net, opt = build(SPEC), create("adam")
    for i, step in enumerate(steps):
        acc = accuracies[i] if accuracies else None
        checkpoints.save(net, opt, {"step": step, "epoch": 0}, test_accuracy=acc)
    return net


def names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_keep_last_and_the_latest_pointer(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=3)
    save_steps(checkpoints, [100, 200, 300, 400, 500])
    assert names(tmp_path) == ["ckpt-00000300.h5", "ckpt-00000400.h5", "ckpt-00000500.h5", "latest"]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "ckpt-00000500.h5\n"
    assert checkpoints.latest() == tmp_path / "checkpoints" / "ckpt-00000500.h5"
    assert checkpoints.last_seconds > 0


def test_keep_best_keeps_the_most_accurate(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=2, keep_best=True)
    save_steps(checkpoints, [1, 2, 3, 4, 5], accuracies=[0.5, 0.9, 0.6, 0.95, 0.7])
    assert names(tmp_path) == ["best", "ckpt-00000004.h5", "ckpt-00000005.h5", "latest"]
    save_steps(checkpoints, [6, 7], accuracies=[0.8, 0.85])
    assert names(tmp_path) == [
        "best",
        "ckpt-00000004.h5",
        "ckpt-00000006.h5",
        "ckpt-00000007.h5",
        "latest",
    ]
    assert read(checkpoints.best()).meta["test_accuracy"] == 0.95


def test_keep_last_zero_keeps_all_and_bad_values_are_refused(tmp_path):
    save_steps(CheckpointDir(tmp_path, keep_last=0), [1, 2, 3, 4])
    assert len(names(tmp_path)) == 5
    with pytest.raises(ValueError, match="keep_last -1"):
        CheckpointDir(tmp_path, keep_last=-1)


def test_the_latest_is_kept_even_when_older_than_the_rest(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=1)
    save_steps(checkpoints, [500])
    (tmp_path / "checkpoints" / "ckpt-00000900.h5").write_bytes(b"from an abandoned branch")
    save_steps(checkpoints, [600])
    assert find_resume(tmp_path).meta["step"] == 600  # `latest` wins over step order


def test_find_resume_skips_a_corrupt_newest(tmp_path, caplog):
    save_steps(CheckpointDir(tmp_path), [100, 200])
    latest = tmp_path / "checkpoints" / "ckpt-00000200.h5"
    latest.write_bytes(latest.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING, logger="mpinet.worker"):
        ckpt = find_resume(tmp_path)
    assert ckpt.meta["step"] == 100
    assert ckpt.path == tmp_path / "checkpoints" / "ckpt-00000100.h5"
    assert f"skipping checkpoint {latest}: not a readable HDF5 file" in caplog.text


def test_find_resume_takes_a_file_a_pointer_or_a_directory(tmp_path):
    assert find_resume(tmp_path) is None  # a directory with no checkpoint at all
    save_steps(CheckpointDir(tmp_path, keep_last=0), [100, 200])
    folder = tmp_path / "checkpoints"
    assert find_resume(folder / "ckpt-00000100.h5").meta["step"] == 100
    assert find_resume(folder / "latest").path == folder / "ckpt-00000200.h5"
    assert find_resume(folder).meta["step"] == 200
    assert find_resume(tmp_path).meta["step"] == 200
    (folder / "ckpt-00000100.h5").write_text("garbage")
    with pytest.raises(CheckpointError, match="ckpt-00000100.h5: not a readable HDF5"):
        find_resume(folder / "ckpt-00000100.h5")  # a file: its errors are raised, not skipped
    with pytest.raises(CheckpointError, match="no such file or directory"):
        find_resume(folder / "ckpt-00000300.h5")


def test_find_resume_refuses_a_directory_whose_checkpoints_are_all_invalid(tmp_path, caplog):
    save_steps(CheckpointDir(tmp_path), [100, 200])
    folder = tmp_path / "checkpoints"
    for path in folder.glob("ckpt-*.h5"):
        path.write_bytes(path.read_bytes()[:3000])
    with caplog.at_level(logging.WARNING, logger="mpinet.worker"):
        with pytest.raises(CheckpointError) as error:
            find_resume(tmp_path)
    message = str(error.value)
    assert message.startswith(
        f"checkpoint folder {folder}: none of its 2 checkpoint(s) is "
        f"valid (the newest: checkpoint {folder / 'ckpt-00000200.h5'}: "
    )
    assert message.endswith("restore them from a copy or start a fresh run")
    assert "\n" not in message and caplog.text.count("skipping checkpoint") == 2


def test_a_pointer_to_a_missing_file_is_one_line(tmp_path):
    save_steps(CheckpointDir(tmp_path), [100])
    pointer = tmp_path / "checkpoints" / "latest"
    pointer.write_text("ckpt-00000999.h5\n")
    with pytest.raises(CheckpointError) as error:
        find_resume(pointer)
    assert str(error.value) == (
        f"checkpoint pointer {pointer}: names ckpt-00000999.h5, which does not exist; expected "
        f"a file beside it; pass the run directory to use its newest valid checkpoint"
    )
    assert find_resume(tmp_path).meta["step"] == 100  # the directory: the next valid one


def test_best_file_is_the_highest_stored_accuracy(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=0)
    assert checkpoints.best_file() is None
    save_steps(checkpoints, [1, 2])  # no accuracy stored
    assert checkpoints.best_file() is None
    save_steps(checkpoints, [3, 4, 5, 6], accuracies=[0.5, 0.93, 0.7, 0.93])
    assert checkpoints.best_file() == checkpoints.dir / "ckpt-00000004.h5"  # the first 0.93
    (checkpoints.dir / "ckpt-00000004.h5").write_bytes(b"damaged")
    assert checkpoints.best_file() == checkpoints.dir / "ckpt-00000006.h5"


def test_a_copied_run_directory_resumes(tmp_path):
    save_steps(CheckpointDir(tmp_path / "a"), [100, 200])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpt = find_resume(tmp_path / "b")
    assert ckpt.path == tmp_path / "b" / "checkpoints" / "ckpt-00000200.h5"


def test_leftovers_of_a_killed_save_are_removed(tmp_path):
    checkpoints = CheckpointDir(tmp_path)
    save_steps(checkpoints, [1])
    leftover = tmp_path / "checkpoints" / ".ckpt-00000002.h5.tmp-4242"
    leftover.write_bytes(b"half")
    save_steps(checkpoints, [2])
    assert not leftover.exists()


@pytest.mark.slow
def test_sigkill_at_any_moment_of_a_save_loses_nothing(tmp_path):
    """A writer saving 12 MB checkpoints in a loop is killed at random moments, 8 times.
    After each kill the last checkpoint it reported saved (or a newer one) must resume, and
    `latest` must name a valid file."""
    rand = random.Random(5)
    reported, mid_write = 0, 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=job_environment(),
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rand.uniform(0, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        mid_write += any((tmp_path / "checkpoints").glob(TEMPORARY_GLOB))
        saved = [int(line.split()[1]) for line in out.split("\n") if line.startswith("saved")]
        reported = max([reported, *saved])
        ckpt = find_resume(tmp_path)
        if reported == 0:
            continue  # killed before the first save finished: nothing to resume is right
        assert ckpt is not None and ckpt.meta["step"] >= reported
        latest = CheckpointDir(tmp_path).latest()
        assert read(latest).path == ckpt.path  # `latest` itself validates
    assert reported >= 3 and mid_write >= 1  # kills landed between saves and inside writes
