"""The error every rank raises together, the job's exit codes, and how messages name ranks."""

# Exit codes of an MPI job, whichever rank decides them.
EXIT_FAILURE = 1  # an uncaught exception on some rank: MPI Abort
EXIT_USER_ERROR = 2  # every rank raised the same AllRanksError: clean exit, one line on rank 0
EXIT_STALL = 3  # the stall watchdog: a collective did not complete in time: MPI Abort


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
