"""The communicator: one MPI.Intracomm behind a small interface of NumPy arrays.

Every collective of `Comm` must be called by every rank of the communicator, in the same
order, with arrays of the same dtype and shape. A trailing `_` means the array is changed in
place. `LocalComm` (local.py) has the same collectives for a single process and needs no
MPI; launch.py chooses between them.

mpi4py is imported only inside `world()` and `Comm`, so `import mpinet.cluster` works on a
machine without an MPI library, and local mode never initialises MPI.
"""

import os
import pickle
import sys
import threading
import time

import numpy as np

from . import watchdog
from .stats import CommStats

# Seconds a collective may take before the watchdog aborts the job. Generous: a step, an
# evaluation or a checkpoint on one rank must fit in it while the others wait.
DEFAULT_TIMEOUT = 300.0

ABORT_PAUSE_SECONDS = 0.1  # see Comm.abort
ABORT_DEADLINE_SECONDS = 2.0


class Comm:
    """One MPI communicator: rank, world_size, and collectives on NumPy arrays.

    With a `timeout` (seconds) every collective is started non-blocking and polled against
    that deadline, so a rank that never arrives aborts the job with a log line instead of
    hanging it (see watchdog.py); `timeout=None` waits forever. `comm.step` (set by the
    caller) and `comm.timeout` may be changed at any time; both only affect that log line
    and that deadline. `comm.seq` counts the collectives started so far: the same number on
    every rank at the same point, which is how a stall report says where each rank is.
    """

    def __init__(self, mpi_comm, timeout=DEFAULT_TIMEOUT):
        from mpi4py import MPI

        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.world_size = mpi_comm.Get_size()
        self.is_root = self.rank == 0
        self.library = mpi_library(MPI.Get_library_version())
        self.timeout = timeout
        self.step = None
        self.stats = CommStats()
        self.seq = 0  # collectives started so far: the same number on every rank
        self._MPI = MPI
        # A watched barrier first: Split_type is blocking, but once every rank has passed
        # the barrier it cannot hang.
        self.barrier()
        node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        node.Free()

    def __repr__(self):
        return (
            f"Comm(rank={self.rank}, world_size={self.world_size}, "
            f"local_rank={self.local_rank}, local_size={self.local_size}, "
            f"timeout={self.timeout})"
        )

    # -- arrays: the hot path -------------------------------------------------------------

    def allreduce_sum_(self, buf):
        """Replace `buf` by the elementwise sum of every rank's `buf`.

        Every rank must call this with an array of the same dtype and shape, in the same
        order. One message, whatever the size: pass the whole flat buffer.
        """
        self.finish(self._start_sum("allreduce_sum_", buf))

    def allreduce_mean_(self, buf):
        """Replace `buf` (floating point) by the elementwise mean over the ranks.

        Every rank must call this with an array of the same dtype and shape, in the same
        order. Sum first, then divide: every rank gets bit-identical results.
        """
        check_floating(buf)
        self.finish(self._start_sum("allreduce_mean_", buf))
        buf /= self.world_size

    def start_allreduce_sum_(self, buf):
        """allreduce_sum_ in halves, for cluster/overlap.py: start it and return the handle.
        progress(handles) moves started ones on (MPICH progresses only inside MPI calls);
        finish(handle) waits, watched, and counts it. Until then buf is MPI's: leave it be."""
        return self._start_sum("allreduce_sum_", buf)

    def progress(self, handles):
        for request, *_ in handles:
            request.Test()

    def finish(self, handle):
        request, name, nbytes, t0 = handle
        if self.timeout is None:
            request.Wait()
        else:
            watchdog.wait(self, request, name, t0)
        self.stats.record(name, nbytes, time.perf_counter() - t0)

    def broadcast_(self, buf, root=0):
        """Overwrite `buf` on every rank with the `buf` of rank `root`.

        Every rank must call this with an array of the same dtype and shape, in the same
        order, and the same `root`.
        """
        self._run("broadcast_", buf.nbytes, self.mpi.Ibcast, buf, root)

    def alltoall_(self, send, recv):
        """Block j of `send` to rank j; block r of `recv` <- rank r's (world_size equal blocks)."""
        self._run("alltoall_", send.nbytes, self.mpi.Ialltoall, send, recv)

    def allgather_(self, buf):
        """Block r of `buf` <- block r of rank r's `buf`, on every rank (in place, as above)."""
        self._run("allgather_", buf.nbytes, self.mpi.Iallgather, self._MPI.IN_PLACE, buf)

    def barrier(self):
        """Return once every rank has called barrier()."""
        self._run("barrier", 0, self.mpi.Ibarrier)

    # -- small Python objects (pickled; never on the hot path) ----------------------------

    def allgather_object(self, obj):
        """Return the list of every rank's `obj`, indexed by rank, on every rank.

        Every rank must call this, in the same order. `obj` must pickle.
        """
        data = _dumps(obj)
        sizes = np.zeros(self.world_size, np.int64)
        self._run(
            "allgather_object", 8, self.mpi.Iallgather, np.array([data.size], np.int64), sizes
        )
        received = np.empty(int(sizes.sum()), np.uint8)
        self._run(
            "allgather_object", data.nbytes, self.mpi.Iallgatherv, data, (received, sizes.tolist())
        )
        return _loads_all(received, sizes)

    def gather_object(self, obj, root=0):
        """Return the list of every rank's `obj` on rank `root`, None elsewhere.

        Every rank must call this, in the same order, with the same `root`.
        """
        data = _dumps(obj)
        is_root = self.rank == root
        sizes = np.zeros(self.world_size if is_root else 0, np.int64)
        self._run(
            "gather_object", 8, self.mpi.Igather, np.array([data.size], np.int64), sizes, root
        )
        received = np.empty(int(sizes.sum()), np.uint8)
        spec = (received, sizes.tolist()) if is_root else None
        self._run("gather_object", data.nbytes, self.mpi.Igatherv, data, spec, root)
        return _loads_all(received, sizes) if is_root else None

    def bcast_object(self, obj, root=0):
        """Return rank `root`'s `obj` on every rank (the others pass anything, e.g. None).

        Every rank must call this, in the same order, with the same `root`.
        """
        data = _dumps(obj) if self.rank == root else None
        size = np.array([0 if data is None else data.size], np.int64)
        self._run("bcast_object", 8, self.mpi.Ibcast, size, root)
        if data is None:
            data = np.empty(int(size[0]), np.uint8)
        self._run("bcast_object", data.nbytes, self.mpi.Ibcast, data, root)
        return pickle.loads(data.tobytes())

    # -- point to point: the watchdog's stall reports (never collectives, never watched) ---

    def isend_object(self, obj, dest, tag):
        """Start sending `obj` (pickled) to rank `dest` -> the request, to keep until the
        send may have completed; None when MPI refuses at once (a dead peer)."""
        try:
            return self.mpi.isend(obj, dest=dest, tag=tag)
        except self._MPI.Exception:
            return None

    def poll_object(self, tag):
        """An object some rank sent to this one with `tag`, if one has arrived; else None."""
        status = self._MPI.Status()
        if not self.mpi.iprobe(source=self._MPI.ANY_SOURCE, tag=tag, status=status):
            return None
        return self.mpi.recv(source=status.Get_source(), tag=tag)

    def send(self, buf, dest, tag):
        """Send `buf` to rank `dest`, point to point and watched (not counted in seq nor stats)."""
        self._wait(self.mpi.Isend(buf, dest, tag), "send")

    def recv_(self, buf, source, tag):
        """Receive into `buf` what rank `source` sent with `tag` (watched, as send)."""
        self._wait(self.mpi.Irecv(buf, source, tag), "recv_")

    # -- groups and the end ---------------------------------------------------------------

    def split(self, color, key=0):
        """Return the communicator of the ranks that passed the same `color` (an int >= 0).

        Every rank must call this. Ranks are numbered by `key`, then by their rank here.
        The new communicator has the same timeout.
        """
        self.barrier()  # watched, so that the blocking Split below cannot hang
        return Comm(self.mpi.Split(color, key), timeout=self.timeout)

    def abort(self, code=1):
        """End every process of the job (MPI_COMM_WORLD) now, with exit code `code`."""
        sys.stdout.flush()
        sys.stderr.flush()
        # Let the launcher forward what this rank just wrote: Hydra dropped the last lines
        # of the aborting rank in 1 of 100 jobs without this pause, in none of 300 with it.
        time.sleep(ABORT_PAUSE_SECONDS)
        # Open MPI's Abort waits until its launcher has reached every host, which is never
        # when a host is cut off: this process ends anyway, after ABORT_DEADLINE_SECONDS.
        deadline = threading.Timer(ABORT_DEADLINE_SECONDS, os._exit, (code,))
        deadline.daemon = True
        deadline.start()
        self._MPI.COMM_WORLD.Abort(code)
        # MPICH's Abort returns once it has asked the launcher to kill the job; Python must
        # not go on meanwhile (print the traceback again, run atexit, enter MPI_Finalize).
        os._exit(code)

    def _run(self, name, nbytes, start, *args):
        """Start one non-blocking collective, wait for it (watched), and count it."""
        self.finish(self._start(name, nbytes, start, *args))

    def _start_sum(self, name, buf):
        return self._start(
            name, buf.nbytes, self.mpi.Iallreduce, self._MPI.IN_PLACE, buf, self._MPI.SUM
        )

    def _start(self, name, nbytes, start, *args):
        self.seq += 1
        t0 = time.perf_counter()
        return start(*args), name, nbytes, t0

    def _wait(self, request, name):
        """Wait for a point-to-point `request`, watched as _run watches a collective."""
        if self.timeout is None:
            request.Wait()
        else:
            watchdog.wait(self, request, name, time.perf_counter())


def world(timeout=DEFAULT_TIMEOUT):
    """A `Comm` over MPI_COMM_WORLD (initialises MPI on first use). `timeout=None`: unwatched."""
    from mpi4py import MPI

    return Comm(MPI.COMM_WORLD, timeout=timeout)


def mpi_library(version):
    """MPI_Get_library_version's text -> its name and version, e.g. "Open MPI v5.0.11" or
    "MPICH Version: 5.0.2" (the logs say which MPI ran: mpinet works with either)."""
    first = version.strip().splitlines()[0] if version.strip() else "unknown MPI"
    return " ".join(first.split(",")[0].split())


def check_floating(buf):
    if buf.dtype.kind not in "fc":
        raise TypeError(
            f"allreduce_mean_ needs a floating-point array, got {buf.dtype}; "
            "use allreduce_sum_ for integers"
        )


def _dumps(obj):
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)


def _loads_all(received, sizes):
    """Unpickle the concatenated pickles of every rank."""
    objects, start = [], 0
    for size in sizes.tolist():
        objects.append(pickle.loads(received[start : start + size].tobytes()))
        start += size
    return objects
