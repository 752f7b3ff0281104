"""`mpirun`: run a script of tests/cluster/scripts under a real mpiexec, with a timeout."""

import sys
from pathlib import Path

import pytest
from support import job_environment, mpiexec, run_job

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def mpirun():
    """mpirun(n, script, *args, timeout=60) -> Finished, or skip (loudly) without mpiexec."""
    launcher = mpiexec()
    if launcher is None:
        pytest.skip(
            "MPI TESTS SKIPPED: no mpiexec next to this Python or on PATH; "
            "install one with `pip install .[mpich]`"
        )

    def run(n, script, *args, timeout=60):
        command = [launcher, "-n", str(n), sys.executable, str(SCRIPTS / script), *args]
        return run_job(command, timeout=timeout, env=job_environment())

    return run
