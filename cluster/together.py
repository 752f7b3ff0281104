"""Failing together: an error met on some ranks becomes the same error on every rank.

A rank that raises alone leaves the others waiting in their next collective (and the job
ends in an MPI Abort). Both helpers here are collectives, which every rank calls at the same
point; they raise an `AllRanksError` on every rank at once, so the job exits cleanly with one
line (see abort.py).

    chosen = on_root(comm, "finding the checkpoint", lambda: resolve(given))
    # rank 0 runs it; every rank returns its result, or every rank raises the same error

    error = None
    try:
        data = open_data(path)                   # every rank does its own part ...
    except OSError as e:
        error = e
    fail_together(comm, "opening the data", error)   # ... and they fail as one
"""

from mpinet.data.messages import one_line

from .errors import USER_ERRORS, AllRanksError, format_ranks


def on_root(comm, what, fn, errors=USER_ERRORS, share=True):
    """Rank 0 calls fn(); every rank returns its result, or raises the same AllRanksError.

    An exception of `errors` on rank 0 becomes "<what> failed on rank 0: <its message>" on
    every rank (alone, or with what=None: the message itself); any other exception is a bug
    and ends the job as one (abort.py). share=False: the result stays on rank 0 (the other
    ranks return None) and only the success is told: for results that are large or only
    rank 0 uses.
    """
    error, result = None, None
    if comm.is_root:
        try:
            result = fn()
        except errors as e:
            error = one_line(e)
    error, shared = comm.bcast_object((error, result if share else None), root=0)  # dist
    if error is not None:
        alone = what is None or comm.world_size == 1
        raise AllRanksError(error if alone else together_message(what, {error: [0]}))
    return result if comm.is_root else shared


def fail_together(comm, what, error=None):
    """Raise AllRanksError on every rank if any rank passes an `error`, else return.

    A collective. It turns an error found on some ranks only (a file missing on one node)
    into one that every rank raises, so the job exits cleanly instead of aborting.
    """
    gathered = comm.allgather_object(None if error is None else one_line(error))
    failed = {}
    for rank, message in enumerate(gathered):
        if message is not None:
            failed.setdefault(message, []).append(rank)
    if failed and len(gathered) == 1:  # alone: the message itself says it all
        raise AllRanksError(next(iter(failed)))
    if failed:
        raise AllRanksError(together_message(what, failed))


def together_message(what, failed):
    """'opening the data failed on ranks 1, 3: no such file; rank 4: bad'; `failed` maps
    each message to the ranks that met it."""
    lines = [f"{format_ranks(ranks)}: {message}" for message, ranks in failed.items()]
    return f"{what} failed on " + "; ".join(lines)
