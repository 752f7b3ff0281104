"""Helpers for tests (importable as `support`: pytest puts tests/ on sys.path)."""

import os
import shutil
import sys
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
