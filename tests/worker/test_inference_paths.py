"""`mpinet eval`, `predict` and `serve` take a checkpoint file, a run directory or its
`checkpoints/latest`, say which file they chose, and turn a damaged or tampered checkpoint
into one line naming the file and the member, exit 2, locally and under mpiexec."""

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from inference_support import request
from support import job_environment, mpiexec, mpinet_command, run_job

from mpinet.model import load

CORRUPT = "the file is corrupt, use an earlier checkpoint"


@pytest.fixture
def run_dir(checkpoint, tmp_path):
    """A run directory whose newest checkpoint (step 400, named by `latest`) was cut short
    by a full disk; the one of step 300 is intact."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(checkpoint, folder / "ckpt-00000300.h5")
    (folder / "ckpt-00000400.h5").write_bytes(checkpoint.read_bytes()[:4096])
    (folder / "latest").write_text("ckpt-00000400.h5\n")
    return tmp_path / "run"


def mpinet(*args, timeout=60):
    return run_job(mpinet_command() + [str(a) for a in args], timeout=timeout)


def test_eval_of_a_run_directory_uses_its_newest_valid_checkpoint(run_dir, checkpoint):
    chosen = run_dir / "checkpoints" / "ckpt-00000300.h5"
    job = mpinet("eval", run_dir, "--json")
    assert job.returncode == 0, job.output
    report = json.loads(job.stdout)
    assert report["checkpoint"] == str(chosen)
    assert (
        f"skipping checkpoint {run_dir / 'checkpoints' / 'ckpt-00000400.h5'}: not a "
        f"readable HDF5 file" in job.stderr
    )
    direct = json.loads(mpinet("eval", checkpoint, "--json").stdout)
    assert report["accuracy"] == direct["accuracy"] > 0.9  # the same network, the same data
    assert report["confusion_matrix"] == direct["confusion_matrix"]


def test_eval_of_the_latest_pointer_prints_the_file_it_names(run_dir):
    folder = run_dir / "checkpoints"
    (folder / "latest").write_text("ckpt-00000300.h5\n")
    job = mpinet("eval", folder / "latest")
    assert job.returncode == 0, job.output
    assert job.stdout.splitlines()[0] == f"checkpoint {folder / 'ckpt-00000300.h5'}"


def test_predict_of_a_run_directory_names_the_file_and_predicts_with_it(
    run_dir, test_digits, tmp_path
):
    digits, labels = test_digits
    np.save(tmp_path / "digits.npy", digits)
    job = mpinet("predict", run_dir, tmp_path / "digits.npy", "--json")
    assert job.returncode == 0, job.output
    out = json.loads(job.stdout)
    chosen = run_dir / "checkpoints" / "ckpt-00000300.h5"
    assert out["checkpoint"] == str(chosen) and out["dataset"] == "mnist"
    expected = load(chosen).predict((digits / np.float32(255)).reshape(-1, 784)).argmax(axis=1)
    assert [r["label"] for r in out["predictions"]] == expected.tolist()
    assert [r["name"] for r in out["predictions"]] == [str(k) for k in expected]
    assert sum(expected == labels) >= len(labels) - 1
    assert "skipping checkpoint" in job.stderr and job.stderr.count("\n") == 1


def test_serve_of_a_run_directory_logs_the_file_it_serves(run_dir):
    chosen = run_dir / "checkpoints" / "ckpt-00000300.h5"
    proc = subprocess.Popen(
        mpinet_command() + ["serve", str(run_dir), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=job_environment(),
    )
    try:
        lines = [proc.stderr.readline() for _ in range(2)]
        assert "WARNING skipping checkpoint" in lines[0], lines
        assert f"INFO serving {chosen} on http://127.0.0.1:" in lines[1], lines
        url = lines[1].split("http://", 1)[1].split()[0]
        code, health = request(f"http://{url}/healthz")
        assert code == 200 and health == {
            "status": "ok",
            "checkpoint": str(chosen),
            "dataset": "mnist",
        }
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_a_run_directory_without_checkpoints_is_one_line(tmp_path):
    job = mpinet("eval", tmp_path)
    assert job.returncode == 2
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"ERROR run directory {tmp_path}: no checkpoint (no ckpt-<step>.h5 in {tmp_path}); "
        f"expected a run that saved one; train it further, or pass a checkpoint file"
    )


def tampered(checkpoint, tmp_path, change):
    path = tmp_path / "ckpt-00000300.h5"
    shutil.copy(checkpoint, path)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


TAMPERING = {
    "negative step": (
        lambda f: f.attrs.modify("step", -3),
        "attribute step is -3; expected an integer >= 0; " + CORRUPT,
    ),
    "edited step": (
        lambda f: f.attrs.modify("step", 301),
        "attribute meta_sha256 does not match the root and /optimizer attributes; "
        "expected them as saved (one was changed since); " + CORRUPT,
    ),
    "extra group": (
        lambda f: f.create_group("notes"),
        "/notes is an unknown group; expected only the groups /params, /state and "
        "/optimizer; the file was not written by mpinet or was edited, use another",
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_eval_of_a_tampered_checkpoint_is_one_line_naming_file_and_member(
    checkpoint, tmp_path, kind
):
    change, message = TAMPERING[kind]
    path = tampered(checkpoint, tmp_path, change)
    job = mpinet("eval", path)
    assert job.returncode == 2 and job.stdout == ""
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"ERROR checkpoint {path}: {message}"), lines


@pytest.mark.mpi
def test_eval_of_a_bad_checkpoint_under_mpiexec_is_one_line_on_every_rank(checkpoint, tmp_path):
    if mpiexec() is None:
        pytest.skip("no mpiexec")
    change, message = TAMPERING["negative step"]
    path = tampered(checkpoint, tmp_path, change)
    job = run_job([mpiexec(), "-n", "2"] + mpinet_command() + ["eval", str(path)], timeout=60)
    assert job.returncode == 2, job.output
    lines = [line for line in job.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in job.output, lines
    assert lines[0].endswith(
        f"ERROR loading the checkpoint and data failed on ranks 0-1: checkpoint {path}: {message}"
    ), lines


def test_eval_help_lists_the_splits_and_the_checkpoint_forms():
    job = mpinet("eval", "--help")
    assert job.returncode == 0
    text = " ".join(job.stdout.split())
    assert "--split {test,train,val}" in text and "test, train or val" in text
    assert "a checkpoint file, a run directory or its checkpoints/latest" in text
    bad = mpinet("eval", "x.h5", "--split", "validation")
    assert bad.returncode == 2
    assert "argument --split: invalid choice: 'validation' (choose from" in bad.stderr


def test_eval_of_a_split_the_file_lacks_is_one_line(checkpoint, mnist_h5):
    job = mpinet("eval", checkpoint, "--split", "val")
    assert job.returncode == 2
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"ERROR data file {mnist_h5}: has no /val split; expected one of train, test; prepare "
        f"a file with `mpinet prepare --val N` for /val, or pass --split test"
    ), lines


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_reader_that_stops_early_is_not_an_error(checkpoint, test_digits, tmp_path, command):
    """`mpinet eval CKPT | head -1`: the closed pipe ends the output quietly, exit 0."""
    digits = tmp_path / "digits.npy"
    np.save(digits, np.repeat(test_digits[0], 2000, axis=0))  # more lines than a pipe holds
    argv = [*mpinet_command(), command, str(checkpoint)] + ([str(digits)] * (command == "predict"))
    done = subprocess.run(
        " ".join(argv) + " | head -1; exit ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        env=job_environment(),
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and "Broken pipe" not in done.stderr
    assert "ERROR" not in done.stderr and "Traceback" not in done.stderr
