"""The communicator of one process alone: the same collectives as `Comm`, and no MPI.

Local mode (no launcher) and the unit tests run on it, so most of mpinet is testable on a
machine without an MPI library.
"""

import pickle

from .comm import check_floating
from .stats import CommStats


class LocalComm:
    """The communicator of one process alone: every collective is the identity.

    The same collectives and invariants as `Comm` (not its point-to-point stall reports: a
    LocalComm is never watched), no MPI. Objects are copied through pickle as
    they would be by MPI, so an unpicklable object fails here too. It moves no data, so its
    stats stay at zero.
    """

    rank = 0
    world_size = 1
    is_root = True
    local_rank = 0
    local_size = 1
    library = "no MPI"
    timeout = None

    def __init__(self):
        self.step = None
        self.stats = CommStats()

    def __repr__(self):
        return "LocalComm()"

    def allreduce_sum_(self, buf):
        """The sum over one rank: `buf` stays as it is."""

    def allreduce_mean_(self, buf):
        """The mean over one rank: `buf` (floating point) stays as it is."""
        if buf.dtype.kind not in "fc":  # refused as Comm refuses it (one message, in comm.py)
            check_floating(buf)

    def broadcast_(self, buf, root=0):
        """Broadcast from the only rank: `buf` stays as it is."""
        _check_root(root)

    def alltoall_(self, send, recv):
        """The one block of `send` goes to this rank: `recv` becomes a copy of `send`."""
        recv[...] = send

    def allgather_(self, buf):
        """Gather from the only rank: `buf` stays as it is."""

    def barrier(self):
        """Nothing to wait for."""

    def allgather_object(self, obj):
        return [_copy(obj)]

    def gather_object(self, obj, root=0):
        _check_root(root)
        return [_copy(obj)]

    def bcast_object(self, obj, root=0):
        _check_root(root)
        return _copy(obj)

    def split(self, color, key=0):
        return LocalComm()

    def abort(self, code=1):
        """End this process with exit code `code`."""
        raise SystemExit(code)


def local():
    """A `LocalComm`: one process, no MPI."""
    return LocalComm()


def _check_root(root):
    if root != 0:
        raise ValueError(f"root {root} does not exist: a LocalComm has only rank 0")


def _copy(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
