"""Distribution: the communicator, cross-rank checks, aborting the job, the stall watchdog.

    comm      Comm: one MPI communicator, collectives on NumPy arrays; world()
    local     LocalComm: the same collectives for one process, no MPI; local()
    launch    auto(): a Comm under mpirun/mpiexec/srun, a LocalComm otherwise
    checks    assert_same_*: every rank compares everyone's value, raises the same error
    together  on_root, fail_together: rank 0 (or some ranks) fail, every rank raises
    errors    the error policy: user errors, exit codes, AllRanksError
    abort     abort_on_error: an error on one rank never leaves the others hanging
    watchdog  a collective that does not complete in time ends the job, loudly
    stats     what the collectives cost (for the metrics)
    wire      Wire: the gradient's mean over the ranks, float32 as it is or 16-bit values
    alphabeta the alpha-beta cost of MPICH's allreduce (what `mpinet scale` predicts with)

The only package that imports mpi4py, and only inside `world()` and `Comm`.
"""

from .abort import abort_on_error, install_abort_handler
from .checks import (
    assert_same,
    assert_same_config,
    assert_same_data,
    assert_same_layout,
    assert_same_params,
)
from .comm import DEFAULT_TIMEOUT, Comm, CommStats, world
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_STALL,
    EXIT_USER_ERROR,
    USER_ERRORS,
    AllRanksError,
)
from .launch import auto, launched_by_mpi
from .local import LocalComm, local
from .together import fail_together, on_root

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PREEMPTED",
    "EXIT_STALL",
    "EXIT_USER_ERROR",
    "USER_ERRORS",
    "AllRanksError",
    "Comm",
    "CommStats",
    "LocalComm",
    "abort_on_error",
    "assert_same",
    "assert_same_config",
    "assert_same_data",
    "assert_same_layout",
    "assert_same_params",
    "auto",
    "fail_together",
    "install_abort_handler",
    "launched_by_mpi",
    "local",
    "on_root",
    "world",
]
