"""The 16-bit wire on every rank, checked bit for bit against NumPy; one line per rank.

Run as `mpiexec -n N python wire.py`. Any failed assertion is an uncaught exception, which
install_abort_handler turns into a non-zero exit of the job.
"""

import sys

import numpy as np

from mpinet import cluster
from mpinet.cluster.wire import WIRE_DTYPES, Wire

# Lengths: a multiple of every world size tested, one that is not (padding), and fewer
# values than ranks (some ranks own only padding).
SIZES = (1200, 1001, 2)


def rank_gradient(rank, n, dtype):
    """What rank `rank` contributes: gradient-like values over many binades, a few exactly
    halfway between two float16/bfloat16 neighbours (ties to even), zeros and negatives."""
    rng = np.random.default_rng((11, rank, n))
    values = rng.standard_normal(n) * 10.0 ** rng.integers(-7, 3, n)
    values[::7] = 1 + (2 * rng.integers(0, 64, values[::7].size) + 1) * 2.0**-11  # f16 ties
    values[::11] = 1 + (2 * rng.integers(0, 64, values[::11].size) + 1) * 2.0**-8  # bf16 ties
    values[::13] = 0.0
    return values.astype(dtype)


def reference(world_size, n, grad_dtype, wire_dtype):
    """Round every rank's gradient to 16 bits, add in float32 in rank order, divide, round."""
    rounded = [
        rank_gradient(r, n, grad_dtype).astype(wire_dtype).astype(np.float32)
        for r in range(world_size)
    ]
    total = rounded[0].copy()
    for x in rounded[1:]:
        total += x
    mean = total / np.float32(world_size)
    return mean.astype(wire_dtype).astype(grad_dtype)


def check_16_bit(comm):
    for name in ("bfloat16", "float16"):
        wire = Wire(comm, name)
        for n in SIZES:
            for grad_dtype in (np.float32, np.float64):
                grad = rank_gradient(comm.rank, n, grad_dtype)
                wire.allreduce_mean_(grad)
                expected = reference(comm.world_size, n, grad_dtype, WIRE_DTYPES[name])
                assert grad.dtype == grad_dtype
                assert np.array_equal(grad, expected), (name, n, grad_dtype)
                assert np.array_equal(np.signbit(grad), np.signbit(expected))  # -0.0 too
                cluster.assert_same_params(comm, grad)  # identical bits on every rank


def check_float32_is_todays_allreduce(comm):
    for dtype in (np.float32, np.float64):
        grad, today = rank_gradient(comm.rank, 1001, dtype), rank_gradient(comm.rank, 1001, dtype)
        before = comm.stats.by_name["allreduce_mean_"].calls
        Wire(comm, "float32").allreduce_mean_(grad)
        comm.allreduce_mean_(today)
        assert comm.stats.by_name["allreduce_mean_"].calls == before + 2  # one message each
        assert grad.tobytes() == today.tobytes()


def check_stats(comm):
    """The two collectives of a 16-bit mean are watched and counted, with their bytes."""
    padded = -(-1001 // comm.world_size) * comm.world_size
    before = {k: (t.calls, t.nbytes) for k, t in comm.stats.by_name.items()}
    Wire(comm, "bfloat16").allreduce_mean_(np.ones(1001, np.float32))
    for name in ("alltoall_", "allgather_"):
        calls, nbytes = before.get(name, (0, 0))
        tally = comm.stats.by_name[name]
        assert (tally.calls, tally.nbytes) == (calls + 1, nbytes + 2 * padded), name


def main():
    comm = cluster.world(timeout=30.0)
    cluster.install_abort_handler(comm)
    comm.allreduce_mean_(np.zeros(1, np.float32))  # so that the stats name it from the start
    check_16_bit(comm)
    check_float32_is_todays_allreduce(comm)
    check_stats(comm)
    sys.stdout.write(f"rank {comm.rank}/{comm.world_size}: wire ok\n")  # one write


if __name__ == "__main__":
    main()
