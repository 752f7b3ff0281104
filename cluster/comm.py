"""The communicator: one MPI.Intracomm behind a small interface of NumPy arrays.

Every method of `Comm` is a collective: every rank of the communicator must call it, in the
same order, with arrays of the same dtype and shape. A trailing `_` means the array is
changed in place. `LocalComm` has the same methods for a single process and needs no MPI.

mpi4py is imported only inside `world()`, so `import mpinet.cluster` works on a machine
without an MPI library, and local mode never initialises MPI.
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

# Variables that MPI launchers set in every process they start: Hydra (MPICH, Intel MPI) and
# Slurm's PMI2 set PMI_*, PMIx launchers PMIX_RANK, Open MPI OMPI_*, MVAPICH MV2_*.
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
)


class Comm:
    """One MPI communicator: rank, world_size, and collectives on NumPy arrays.

    With a `timeout` (seconds) every collective is started non-blocking and polled against
    that deadline, so a rank that never arrives aborts the job with a log line instead of
    hanging it (see watchdog.py); `timeout=None` waits forever. `comm.step` (set by the
    caller) and `comm.timeout` may be changed at any time; both only affect that log line
    and that deadline.
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
        self._seq = 0  # collectives started so far: the same number on every rank
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
        self._run(
            "allreduce_sum_",
            buf.nbytes,
            self.mpi.Iallreduce,
            self._MPI.IN_PLACE,
            buf,
            self._MPI.SUM,
        )

    def allreduce_mean_(self, buf):
        """Replace `buf` (floating point) by the elementwise mean over the ranks.

        Every rank must call this with an array of the same dtype and shape, in the same
        order. Sum first, then divide: every rank gets bit-identical results.
        """
        _check_floating(buf)
        self._run(
            "allreduce_mean_",
            buf.nbytes,
            self.mpi.Iallreduce,
            self._MPI.IN_PLACE,
            buf,
            self._MPI.SUM,
        )
        buf /= self.world_size

    def broadcast_(self, buf, root=0):
        """Overwrite `buf` on every rank with the `buf` of rank `root`.

        Every rank must call this with an array of the same dtype and shape, in the same
        order, and the same `root`.
        """
        self._run("broadcast_", buf.nbytes, self.mpi.Ibcast, buf, root)

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
        self._seq += 1
        t0 = time.perf_counter()
        request = start(*args)
        if self.timeout is None:
            request.Wait()
        else:
            watchdog.wait(self, request, name, t0)
        self.stats.record(name, nbytes, time.perf_counter() - t0)


class LocalComm:
    """The communicator of one process alone: every collective is the identity.

    Same methods and invariants as `Comm`, no MPI. Objects are copied through pickle as
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
        _check_floating(buf)

    def broadcast_(self, buf, root=0):
        """Broadcast from the only rank: `buf` stays as it is."""
        _check_root(root)

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


def world(timeout=DEFAULT_TIMEOUT):
    """A `Comm` over MPI_COMM_WORLD (initialises MPI on first use). `timeout=None`: unwatched."""
    from mpi4py import MPI

    return Comm(MPI.COMM_WORLD, timeout=timeout)


def local():
    """A `LocalComm`: one process, no MPI."""
    return LocalComm()


def mpi_library(version):
    """MPI_Get_library_version's text -> its name and version, e.g. "Open MPI v5.0.11" or
    "MPICH Version: 5.0.2" (the logs say which MPI ran: mpinet works with either)."""
    first = version.strip().splitlines()[0] if version.strip() else "unknown MPI"
    return " ".join(first.split(",")[0].split())


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpirun, mpiexec, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


def auto(timeout=DEFAULT_TIMEOUT):
    """`world(timeout)` under an MPI launcher (even `mpirun -n 1`), else `LocalComm()`."""
    return world(timeout) if launched_by_mpi() else local()


def _check_floating(buf):
    if buf.dtype.kind not in "fc":
        raise TypeError(
            f"allreduce_mean_ needs a floating-point array, got {buf.dtype}; "
            "use allreduce_sum_ for integers"
        )


def _check_root(root):
    if root != 0:
        raise ValueError(f"root {root} does not exist: a LocalComm has only rank 0")


def _dumps(obj):
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)


def _loads_all(received, sizes):
    """Unpickle the concatenated pickles of every rank."""
    objects, start = [], 0
    for size in sizes.tolist():
        objects.append(pickle.loads(received[start : start + size].tobytes()))
        start += size
    return objects


def _copy(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
