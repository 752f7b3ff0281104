"""Ending the job: an error on one rank must never leave the other ranks hanging.

Without help, a rank that raises waits in MPI_Finalize and the others wait in their next
collective, forever. So, as `python -m mpi4py` does, an uncaught exception under MPI is
logged once, with its rank and traceback, and turned into MPI Abort: the launcher then ends
every process of the job, including those blocked in a collective.

One exception needs no abort: an `AllRanksError` (checks.py) is raised by every rank at the
same point, so nobody is left waiting. Rank 0 logs its one line, and every rank exits
cleanly with code 2.

    with abort_on_error(comm, user_errors=(ValueError, OSError)):   # the worker's main
        train(comm, config)

What happens to an exception leaving the block:

    exception                  LocalComm                        Comm (under MPI)
    AllRanksError              one line, exit 2                 one line on rank 0, exit 2
    one of user_errors         one line, exit 2                 one line with rank, Abort(2)
    SystemExit(0 or None)      exits                            exits
    SystemExit(n)              exits n                          one line with rank, Abort(n)
    KeyboardInterrupt          one line, exit 130               one line with rank, Abort(130)
    anything else (a bug)      propagates (traceback, exit 1)   traceback with rank, Abort(1)

user_errors defaults to errors.USER_ERRORS, the one definition of what is the user's.

`install_abort_handler(comm)` gives scripts the same through sys.excepthook, except that
Python then exits with code 1 after an AllRanksError and never shows it a SystemExit.
"""

import logging
import os
import sys
from contextlib import contextmanager

from mpinet.data.messages import one_line

from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    USER_ERRORS,
    AllRanksError,
)
from .local import LocalComm

log = logging.getLogger(__name__)


@contextmanager
def abort_on_error(comm, user_errors=USER_ERRORS):
    """Run the block; end the job as the table in this module's docstring says."""
    try:
        yield
    except BaseException as error:  # the entry point: every exception ends here, or is re-raised
        code = handle(comm, error, user_errors)
        if code is None:
            raise
        raise SystemExit(code) from None


def install_abort_handler(comm, user_errors=USER_ERRORS):
    """Make an uncaught exception end the whole job (see abort_on_error), via sys.excepthook."""

    def hook(exc_type, error, traceback):
        if handle(comm, error, user_errors) is None:
            sys.__excepthook__(exc_type, error, traceback)

    sys.excepthook = hook


def handle(comm, error, user_errors=USER_ERRORS):
    """Log `error` and abort the job under MPI; in the other cases return the exit code,
    or None to let the exception propagate."""
    if isinstance(error, AllRanksError):
        if comm.is_root:
            log.error("%s", error)
        return EXIT_USER_ERROR
    if isinstance(error, SystemExit) and error.code in (0, None):
        return None
    local = isinstance(comm, LocalComm)
    if isinstance(error, user_errors) and not os.environ.get("MPINET_TRACEBACK"):
        log.error("%s", one_line(error) if local else f"{_who(comm)}: {one_line(error)}")
        code = EXIT_USER_ERROR
    elif isinstance(error, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
        log.error(
            "%s",
            "interrupted: stopped at once, the last checkpoint is intact; run "
            "again with --resume auto"
            if local
            else f"{_who(comm)}: interrupted, aborting the job; the last checkpoint is intact",
        )
    elif local:  # a bug: Python prints its traceback and exits 1, as under MPI
        return None
    elif isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else EXIT_FAILURE
        log.error("%s: exit with code %s, aborting the job", _who(comm), error.code)
    else:
        code = EXIT_FAILURE
        log.error(
            "%s: uncaught %s, aborting the job", _who(comm), type(error).__name__, exc_info=error
        )
    if local:
        return code
    comm.abort(code)  # never returns


def _who(comm):
    return f"rank {comm.rank}/{comm.world_size}"
