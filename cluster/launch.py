"""Which communicator a process gets: a `Comm` over MPI_COMM_WORLD when an MPI launcher
started it, a `LocalComm` otherwise."""

import os

from .comm import DEFAULT_TIMEOUT, world
from .local import local

# Variables that MPI launchers set in every process they start: Hydra (MPICH, Intel MPI) and
# Slurm's PMI2 set PMI_*, PMIx launchers PMIX_RANK, Open MPI OMPI_*, MVAPICH MV2_*.
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
)


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpirun, mpiexec, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


def auto(timeout=DEFAULT_TIMEOUT):
    """`world(timeout)` under an MPI launcher (even `mpirun -n 1`), else `LocalComm()`."""
    return world(timeout) if launched_by_mpi() else local()
