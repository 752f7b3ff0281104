"""The error policy of every mpinet command, defined once: which exceptions are the user's,
the exit codes, the error every rank raises together, and how messages name ranks.

A user error is bad input — a file, a flag, a config key, a checkpoint, an image: ONE line
in the grammar `<subject>: <found>; expected <what>; <what to do>`, and exit 2. mpinet raises
those as ValueError (or a subclass) or OSError (FileNotFoundError, ...). Anything else — a
KeyError, a TypeError, an AttributeError from our own code — is a bug: its traceback is
printed, in local mode exactly as under MPI (set MPINET_TRACEBACK=1 to see one for a user
error too).
"""

USER_ERRORS = (ValueError, OSError)

# Exit codes, the same locally and under MPI, whichever rank decides them (README lists them).
EXIT_OK = 0
EXIT_FAILURE = 1  # an uncaught exception (a bug) on some rank: traceback, MPI Abort
EXIT_USER_ERROR = 2  # bad input: one line; every rank stops together
EXIT_STALL = 3  # the stall watchdog: a collective did not complete in time: MPI Abort
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: SIGTERM/SIGUSR1, checkpointed; run again with --resume auto
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class AllRanksError(RuntimeError):
    """An error that every rank raises at the same point with the same message.

    The cross-rank checks raise it after an allgather, so no rank is left waiting in a
    collective: the job can end cleanly, with one line on rank 0 and no MPI Abort.
    Raise it only where that holds; any other exception aborts the job.
    """


def format_ranks(ranks):
    """'rank 3', 'ranks 0-2, 5': a sorted list of ranks, runs shortened to ranges."""
    ranks = sorted(ranks)
    runs = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    noun = "rank" if len(ranks) == 1 else "ranks"
    return f"{noun} {', '.join(parts)}"
