"""Real jobs under mpiexec: the collectives, the checks, aborting, the stall watchdog.

Each test runs a script of tests/cluster/scripts as a job of 2 to 4 ranks on this machine
(4 ranks on 2 cores are oversubscribed) and looks at the exit code, the time and the log.
"""

import re

import pytest

pytestmark = pytest.mark.mpi

ABORT_BANNER = "application called MPI_Abort"


@pytest.mark.numerics
@pytest.mark.parametrize("ranks, timeout", [(2, "none"), (2, "30"), (4, "30")])
def test_every_collective_on_every_rank(mpirun, ranks, timeout):
    job = mpirun(ranks, "collectives.py", timeout)
    assert job.returncode == 0, job.output
    for rank in range(ranks):
        assert f"rank {rank}/{ranks}: collectives ok" in job.stdout


@pytest.mark.parametrize(
    "what, message",
    [
        (
            "layout",
            "parameter layout differs across ranks: ranks 0, 2 have 2 tensors / 25 values, "
            "rank 1 has 3 tensors / 35 values; ",
        ),
        ("params", "parameter checksum differs across ranks: ranks 0, 2 have sha256 "),
        ("config", "resolved config differs across ranks: ranks 0, 2 have sha256 "),
        (
            "data",
            "data file differs across ranks: ranks 0, 2 have 'mnist sha256=cafe', "
            "rank 1 has 'mnist sha256=beef'; ",
        ),
        ("together", "opening the data failed on rank 1: data/mnist.h5 not found"),
    ],
)
def test_a_check_that_fails_on_one_rank_fails_on_every_rank_alike(mpirun, what, message):
    job = mpirun(3, "failures.py", f"mismatch-{what}")
    assert job.returncode == 2, job.output
    raised = re.findall(r"^raised on rank (\d): (.*)$", job.stderr, re.M)
    assert sorted(rank for rank, _ in raised) == ["0", "1", "2"]
    assert len({text for _, text in raised}) == 1 and message in raised[0][1]
    logged = re.findall(r"^ERROR mpinet.cluster.abort: (.*)$", job.stderr, re.M)
    assert logged == [raised[0][1]]  # once, by rank 0, one line
    assert "Traceback" not in job.stderr and ABORT_BANNER not in job.stderr


@pytest.mark.parametrize("mode", ["raise", "excepthook"])
def test_an_exception_on_one_rank_aborts_the_job_and_logs_once(mpirun, mode):
    job = mpirun(4, "failures.py", mode, timeout=60)
    assert job.returncode == 1, job.output
    assert job.seconds < 30
    assert job.stderr.count("rank 1/4: uncaught ValueError, aborting the job") == 1
    assert job.stderr.count("Traceback (most recent call last)") == 1
    assert job.stderr.count("ValueError: boom at step 3") == 1


def test_a_user_error_on_one_rank_is_one_line_and_exit_2(mpirun):
    job = mpirun(2, "failures.py", "user-error")
    assert job.returncode == 2, job.output
    assert "ERROR mpinet.cluster.abort: rank 1/2: bad value in the data file" in job.stderr
    assert "Traceback" not in job.stderr


def test_sys_exit_on_one_rank_aborts_with_its_code(mpirun):
    job = mpirun(2, "failures.py", "exit")
    assert job.returncode == 5, job.output
    assert "rank 1/2: exit with code 5, aborting the job" in job.stderr


def test_a_rank_killed_by_sigkill_ends_the_job(mpirun):
    job = mpirun(4, "failures.py", "sigkill")
    assert job.returncode != 0 and job.seconds < 30, job.output


STALL_TIMEOUT = 2.0


@pytest.mark.parametrize("ranks", [2, 4])
def test_the_watchdog_ends_a_job_whose_rank_never_arrives(mpirun, ranks):
    job = mpirun(ranks, "failures.py", "sleep", str(STALL_TIMEOUT))
    assert job.returncode == 3, job.output
    assert job.seconds < STALL_TIMEOUT + 10
    others = "rank 0" if ranks == 2 else "ranks 0, 2-3"
    assert (
        f"rank 0/{ranks}: allreduce_mean_ (collective #4, step 3) has not completed after 2."
    ) in job.stderr
    assert f"waiting in it: {others}; no answer from rank 1 " in job.stderr
    assert job.stderr.count("has not completed") == 1


def test_the_watchdog_names_a_rank_that_is_in_another_collective(mpirun):
    job = mpirun(4, "failures.py", "skip", str(STALL_TIMEOUT))
    assert job.returncode == 3, job.output
    assert job.seconds < STALL_TIMEOUT + 10
    # Rank 1 ran a barrier where the others ran allreduce #4; MPICH let its barrier match
    # their allreduce, so rank 1 is one collective ahead.
    assert re.search(
        r"waiting in it: ranks 0, 2-3; rank 1 is in allreduce_mean_ "
        r"\(collective #5, step 3\)",
        job.stderr,
    ), job.output


@pytest.mark.parametrize("ranks", [1, 2])
def test_auto_gives_a_real_comm_under_mpiexec_even_for_one_rank(mpirun, ranks):
    job = mpirun(ranks, "failures.py", "auto")
    assert job.returncode == 0, job.output
    assert sorted(re.findall(r"rank \d: \w+", job.stdout)) == [
        f"rank {r}: Comm" for r in range(ranks)
    ]
