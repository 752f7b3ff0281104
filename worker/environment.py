"""What a run ran on, recorded at the start of every leg: for `mpinet report` and people; and
the one `package_version` (mpinet --version, the metrics' mpinet_run label, this record).

    RUN_DIR/environment.jsonl   one object per leg: the command, versions, MPI, BLAS, CPU,
                                world size and which host each rank ran on

A report written later, in another process, cannot ask the MPI library or the CPU of the
run any more: so the facts are written down while the run has them.
"""

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from threadpoolctl import threadpool_info

from .files import append_json

PACKAGES = ("mpinet", "numpy", "h5py", "mpi4py", "prometheus-client", "threadpoolctl")


def describe(comm, step):
    """Every rank: this leg's environment (rank 0's view, plus every rank's host)."""
    hosts = comm.gather_object(socket.gethostname(), root=0)  # dist
    if not comm.is_root:
        return None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "command": shlex.join(["mpinet", *sys.argv[1:]]),
        "world_size": comm.world_size,
        "hosts": hosts,
        "mpi": comm.library,
        "python": platform.python_version(),
        "packages": {name: package_version(name, missing=None) for name in PACKAGES},
        "git_commit": git_commit(),
        "blas": [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ],
        "cpu": cpu(),
    }


def record(run_dir, leg):
    """Rank 0: append this leg to RUN_DIR/environment.jsonl."""
    append_json(Path(run_dir) / "environment.jsonl", leg)


def git_commit():
    """The commit of the checkout mpinet runs from (a `pip install -e .`), else None."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], timeout=5, capture_output=True, text=True
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "-uno"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    commit = done.stdout.strip() or None
    return f"{commit} (with uncommitted changes)" if commit and dirty else commit


def cpu():
    """The CPU model and its feature flags (Linux: /proc/cpuinfo), and the cores usable."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "flags": flags, "machine": platform.machine(), "cores": cores}


def package_version(name="mpinet", missing="0+unknown"):
    """The installed version of package `name`; `missing` when it is not installed (mpinet
    run from a source tree that is not)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return missing
