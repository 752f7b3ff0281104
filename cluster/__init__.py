"""Distribution: the communicator, cross-rank checks, aborting the job, the stall watchdog.

The only package that imports mpi4py, and only inside `world()`: `auto()` gives a `Comm`
over MPI_COMM_WORLD under mpirun/mpiexec/srun, and a size-1 `LocalComm` otherwise.
"""

from .abort import abort_on_error, install_abort_handler
from .checks import (
    assert_same,
    assert_same_config,
    assert_same_data,
    assert_same_layout,
    assert_same_params,
    fail_together,
)
from .comm import DEFAULT_TIMEOUT, Comm, CommStats, LocalComm, auto, launched_by_mpi, local, world
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
    "world",
]
