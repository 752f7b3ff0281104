"""The gradient's wire: the mean over the ranks, sent as it is or rounded to 16 bits.

    Wire(comm, "float32")    exactly comm.allreduce_mean_: one Iallreduce of the buffer
    Wire(comm, "bfloat16")   each value rounded to bfloat16 (or "float16") for the wire,
                             summed in float32

MPI has no sum over 16-bit floats, so the 16-bit wire is a reduce-scatter and an allgather
built from two collectives of raw 16-bit words. Rank r owns chunk r of the buffer (padded
to world_size equal chunks):

    1. round the gradient to 16 bits (to nearest, ties to even)
    2. alltoall_: chunk j of every rank goes to rank j
    3. rank j adds the world_size copies of its chunk in float32, in rank order, divides by
       world_size, and rounds the mean to 16 bits: one rounding, whatever world_size is
    4. allgather_: every rank receives every mean chunk: identical bits on every rank

It halves the bytes each rank sends, and its bits are defined here, not by the reduction
tree of the MPI library: the same on MPICH and Open MPI, for any message size. The other
way, a user-defined MPI op over 16-bit data (upcast, add, round back), rounds every partial
sum on every hop; on one 2-core machine it measured as fast at 2 ranks and faster at 4
oversubscribed ranks (one collective to schedule instead of two): benchmarks/wire.py.
A float64 gradient is rounded straight from float64 to 16 bits, and summed in float32 too.
"""

import logging

import ml_dtypes
import numpy as np

from .comm import check_floating

log = logging.getLogger(__name__)

# train.allreduce_dtype -> the dtype of the wire; None: the buffer's own (float32, float64).
WIRE_DTYPES = {"float32": None, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


class Wire:
    """The mean gradient over the ranks of `comm`, over a wire of `dtype` (a WIRE_DTYPES key).

    Every rank must call allreduce_mean_ with an array of the same dtype and size, in the
    same order. The two 16-bit buffers are kept between calls (a fresh pair when the size
    changes), so a step allocates nothing but the float32 sum of this rank's chunk.
    """

    def __init__(self, comm, dtype="float32", overlap=None):
        if dtype not in WIRE_DTYPES:
            valid = ", ".join(repr(name) for name in WIRE_DTYPES)
            raise ValueError(f"allreduce dtype: got {dtype!r}; expected one of {valid}")
        self.comm = comm
        self.name = dtype
        self.dtype = WIRE_DTYPES[dtype]
        self.overlap = overlap  # train.overlap: an overlap.Overlap (float32 only), or None
        self._send = self._recv = None

    def backward_hook(self, trace):
        """What the step's backward gets as `spans=`: the --profile recorder (or None), or
        with train.overlap the Overlap that starts the buckets (and passes spans on)."""
        return trace if self.overlap is None else self.overlap.hook(trace)

    def __repr__(self):
        return f"Wire({self.comm!r}, {self.name!r})"

    def allreduce_mean_(self, grad):
        """Replace `grad` (a flat floating-point array) by its mean over the ranks."""
        if self.overlap is not None:  # backward's hook started, waited and divided
            if not self.overlap.done:
                raise RuntimeError("train.overlap: backward ended before its last bucket")
            return
        if self.dtype is None:
            self.comm.allreduce_mean_(grad)  # today's one message, in place: no copy
            return
        check_floating(grad)
        send, recv = self._buffers(grad.size)
        send.view(self.dtype)[: grad.size] = grad  # rounded; the padding stays 0
        self.comm.alltoall_(send, recv)  # row r of recv: rank r's copy of my chunk
        self._average_my_chunk(recv)
        self.comm.allgather_(recv)  # row r: rank r's mean chunk, on every rank
        grad[...] = recv.view(self.dtype)[: grad.size]  # exact: 16 bits fit in grad's dtype

    def _average_my_chunk(self, recv):
        """Row `rank` of `recv` <- the mean of every row, summed in float32 in rank order."""
        rows = recv.view(self.dtype).reshape(self.comm.world_size, -1)
        total = rows[0].astype(np.float32)
        for row in rows[1:]:  # rank order: the same sum whichever rank's data came first
            np.add(total, row, out=total, dtype=np.float32)  # row upcast exactly, no copy
        total /= np.float32(self.comm.world_size)
        rows[self.comm.rank] = total  # rounded once; this row was added above

    def _buffers(self, size):
        """(send, recv): 16-bit words, `size` rounded up to world_size equal chunks."""
        world_size = self.comm.world_size
        padded = -(-size // world_size) * world_size
        if self._send is None or self._send.size != padded:
            self._send = np.zeros(padded, np.uint16)  # MPI moves them as raw 16-bit words
            self._recv = np.zeros(padded, np.uint16)
        return self._send, self._recv
