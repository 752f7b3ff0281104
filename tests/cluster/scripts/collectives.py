"""Every collective of Comm on every rank, checked against NumPy; prints one line per rank.

Run as `mpiexec -n N python collectives.py [TIMEOUT|none]`. Any failed assertion is an
uncaught exception, which install_abort_handler turns into a non-zero exit of the job.
"""

import os
import sys

import numpy as np

from mpinet import cluster


def rank_array(rank, dtype, n=1001):
    """What rank `rank` contributes: the same on every rank that recomputes it."""
    return np.random.default_rng((7, rank)).standard_normal(n).astype(dtype)


def check_allreduce(comm):
    everyone = range(comm.world_size)
    n = comm.world_size
    for dtype in (np.float32, np.float64):
        exact = sum(rank_array(r, np.float64) for r in everyone)
        # From the arithmetic (tests/numerics.py): each term rounded to dtype once, n terms
        # added in MPI's order, the result compared after one more rounding.
        u = np.finfo(dtype).eps / 2
        bound = 2 * (n + 1) * u * sum(np.abs(rank_array(r, np.float64)) for r in everyone)
        buf = rank_array(comm.rank, dtype)
        comm.allreduce_sum_(buf)
        assert buf.dtype == dtype
        assert np.all(np.abs(buf - exact) <= bound + u * np.abs(exact))
        cluster.assert_same_params(comm, buf)  # bit-identical on every rank
        buf = rank_array(comm.rank, dtype)
        comm.allreduce_mean_(buf)  # one more rounding: the division by n
        assert np.all(np.abs(buf - exact / n) <= (bound + 2 * u * np.abs(exact)) / n)
    counts = np.array([comm.rank, 1], np.int64)
    comm.allreduce_sum_(counts)
    assert counts.tolist() == [sum(everyone), comm.world_size]


def check_broadcast(comm):
    for root in (0, comm.world_size - 1):
        buf = rank_array(comm.rank, np.float32)
        comm.broadcast_(buf, root=root)
        assert np.array_equal(buf, rank_array(root, np.float32))


def check_objects(comm):
    last = comm.world_size - 1
    mine = {"rank": comm.rank, "text": "x" * comm.rank}  # pickles of different sizes
    expected = [{"rank": r, "text": "x" * r} for r in range(comm.world_size)]
    assert comm.allgather_object(mine) == expected
    gathered = comm.gather_object(mine, root=last)
    assert gathered == (expected if comm.rank == last else None)
    assert comm.bcast_object(("from", comm.rank), root=last) == ("from", last)


def check_split(comm):
    color = comm.rank % 2
    sub = comm.split(color, key=-comm.rank)  # key reverses the order within a group
    members = [r for r in range(comm.world_size) if r % 2 == color]
    assert sub.world_size == len(members)
    assert sub.rank == members[::-1].index(comm.rank)
    total = np.array([comm.rank], np.int64)
    sub.allreduce_sum_(total)
    assert total[0] == sum(members)
    assert sub.timeout == comm.timeout


def check_node(comm):
    # One machine: every rank shares memory with every other.
    assert (comm.local_rank, comm.local_size) == (comm.rank, comm.world_size)
    if "MPI_LOCALRANKID" in os.environ:  # Hydra says the same
        assert comm.local_rank == int(os.environ["MPI_LOCALRANKID"])


def check_checks(comm):
    cluster.assert_same_layout(comm, (("W1", (3, 4), "float32"), ("b1", (4,), "float32")))
    cluster.assert_same_config(comm, "[optim]\nlr = 0.1\n")
    cluster.assert_same_data(comm, "mnist sha256=0123")
    cluster.assert_same_params(comm, np.arange(10, dtype=np.float32))
    cluster.fail_together(comm, "nothing", None)


def check_on_root(comm):
    assert cluster.on_root(comm, "nothing", lambda: ("from", comm.rank)) == ("from", 0)
    kept = cluster.on_root(comm, "nothing", lambda: comm.rank, share=False)
    assert kept == (0 if comm.is_root else None)
    try:
        cluster.on_root(comm, "reading the file", lambda: int("x"))  # only rank 0 runs it
    except cluster.AllRanksError as error:
        expected = "invalid literal for int() with base 10: 'x'"
        if comm.world_size > 1:
            expected = f"reading the file failed on rank 0: {expected}"
        assert str(error) == expected, str(error)
    else:
        raise AssertionError("on_root returned after an error on rank 0")


def check_stats(comm):
    before = comm.stats.allreduce_bytes
    comm.allreduce_mean_(np.zeros(256, np.float32))
    assert comm.stats.allreduce_bytes == before + 1024
    assert comm.stats.by_name["allreduce_mean_"].calls >= 3
    assert comm.stats.by_name["barrier"].calls >= 1 and comm.stats.wait_seconds > 0


def main():
    timeout = None if sys.argv[1:] == ["none"] else float(sys.argv[1])
    comm = cluster.world(timeout=timeout)
    cluster.install_abort_handler(comm)
    assert (comm.rank == 0) == comm.is_root
    for check in (
        check_allreduce,
        check_broadcast,
        check_objects,
        check_split,
        check_node,
        check_checks,
        check_on_root,
        check_stats,
    ):
        comm.step = check.__name__
        check(comm)
    sys.stdout.write(f"rank {comm.rank}/{comm.world_size}: collectives ok\n")  # one write


if __name__ == "__main__":
    main()
