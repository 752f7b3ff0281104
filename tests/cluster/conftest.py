"""`mpirun`: run a script of tests/cluster/scripts under a real mpiexec, with a timeout."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import mpiexec

SCRIPTS = Path(__file__).parent / "scripts"

# Variables a launcher sets: if pytest itself runs under mpirun, they would confuse ours.
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL")


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self):
        return self.stdout + self.stderr


def job_environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    # One BLAS thread per rank (4 ranks share 2 cores), and unbuffered output, so that
    # what a rank printed is not lost when MPI Abort kills it.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def mpirun():
    """mpirun(n, script, *args, timeout=60) -> Finished, or skip (loudly) without mpiexec."""
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("MPI TESTS SKIPPED: no mpiexec next to this Python or on PATH; "
                    "install one with `pip install -e .[mpich]`")

    def run(n, script, *args, timeout=60):
        command = [launcher, "-n", str(n), sys.executable, str(SCRIPTS / script), *args]
        start = time.monotonic()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=job_environment())
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stdout, stderr = _stop(proc)
            pytest.fail(f"mpiexec -n {n} {script} {' '.join(args)} still running after "
                        f"{timeout} s; output:\n{stdout}{stderr}")
        return Finished(proc.returncode, stdout, stderr, time.monotonic() - start)

    return run


def _stop(proc):
    """End a hung job. Hydra starts the ranks in sessions of their own, so killing the
    process group would miss them: SIGTERM mpiexec (it cleans up), then SIGKILL the rest."""
    tree = _descendants(proc.pid)
    proc.terminate()
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return proc.communicate()


def _descendants(pid):
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found
