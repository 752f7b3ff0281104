"""Which samples each rank owns: index ranges, no MPI needed (rank and world_size are ints).

Training and evaluation split differently on purpose:
- shard_range (training): equal sizes, so every rank runs the same number of steps and no
  rank waits in an allreduce for one that ran out of data; the n % world_size leftover
  samples are dropped (the last ones in the file; at most world_size - 1).
- split_range (evaluation): every sample exactly once, sizes may differ by one; the worker
  sums correct answers and counts over ranks, so nothing needs padding.
"""


def shard_range(n, rank, world_size) -> tuple[int, int]:
    """This rank's contiguous, disjoint, equal-size share [start, stop) of n samples."""
    _check(n, rank, world_size)
    size = n // world_size
    return rank * size, (rank + 1) * size


def split_range(n, rank, world_size) -> tuple[int, int]:
    """This rank's contiguous share [start, stop) of n samples; all ranks together cover n.

    The first n % world_size ranks hold one sample more than the others.
    """
    _check(n, rank, world_size)
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (1 if rank < extra else 0)


def check_rank(rank, world_size):
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world_size {world_size}: expected 0 <= rank < world_size")


def _check(n, rank, world_size):
    check_rank(rank, world_size)
    if n < 0:
        raise ValueError(f"cannot share {n} samples: expected n >= 0")
