"""How fast one rank gets its training batches, and whether the data path ever stalls a step.

    python benchmarks/data_throughput.py [--data FILE.h5] [--world-size 4] [--batch 100]
                                         [--steps 200] [--step-ms 30] [--stall-steps 60]

One row per configuration (order x shape x augmentation x prefetch), for rank 0 of
--world-size ranks with a per-rank share of --batch samples (global batch = batch x world
size). Columns:
- load s: the one-time read of the rank's data from the HDF5 file (its shard, or all of it);
- batches/s, samples/s, ms/batch: the loader alone, the consumer doing nothing (the best of
  three runs of --steps batches);
- wait ms/step: how long a training loop waits for each batch when every step computes for
  --step-ms milliseconds (matrix products, which release the GIL like the real step's do).
  With prefetch the next batch is made during the step, so the wait is near zero whenever
  ms/batch < step-ms.
Prints a Markdown table (docs/data.md holds a measured one).
"""

import argparse
import itertools
import os
import platform
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mpinet.data import TrainBatches, ensure_prepared

AUGMENT = {"shift": 2, "rotate": 10.0}


def batches(tb, steps):
    """`steps` batches, running over as many epochs as needed."""
    for epoch in itertools.count():
        for batch in tb.epoch(epoch):
            yield batch
            steps -= 1
            if steps == 0:
                return


def loader_speed(tb, steps, repeats=3):
    """Seconds per batch, the best of `repeats` runs (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in batches(tb, steps):
            pass
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def wait_per_step(tb, steps, work):
    """Mean time spent waiting for the next batch while each step runs work()."""
    waited = 0.0
    stream = batches(tb, steps)
    while True:
        start = time.perf_counter()
        batch = next(stream, None)
        waited += time.perf_counter() - start
        if batch is None:
            return waited / steps
        work()


def calibrated_step(step_ms):
    """A function that computes for about step_ms milliseconds (float32 matrix products).

    BLAS runs on one thread (as with one MPI rank per core), so the prefetch thread competes
    for the GIL, not for cores: that is what a rank's loader sees in a real run.
    """
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    start, n = time.perf_counter(), 50
    for _ in range(n):
        a @ a
    per_product = (time.perf_counter() - start) / n
    repeats = max(1, round(step_ms / 1000 / per_product))

    def work():
        for _ in range(repeats):
            a @ a

    return work


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the HDF5 file (default: the prepared MNIST in the cache)")
    parser.add_argument("--world-size", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="per-rank share of the batch")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=30.0)
    parser.add_argument("--stall-steps", type=int, default=60)
    args = parser.parse_args()
    path = ensure_prepared(args.data)
    threadpool_limits(1)
    work = calibrated_step(args.step_ms)
    print(f"# {path}, rank 0 of {args.world_size}, {args.batch} samples per rank and step;")
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print()
    print(
        "| order | shape | augment | prefetch | load s | batches/s | samples/s | ms/batch "
        f"| wait ms/step ({args.step_ms:g} ms step) |"
    )
    print("|---|---|---|---|--:|--:|--:|--:|--:|")
    for order, shape, augment, prefetch in itertools.product(
        ("shard", "global"), ("flat", "image"), (None, AUGMENT), (False, True)
    ):
        start = time.perf_counter()
        tb = TrainBatches(
            path,
            global_batch=args.batch * args.world_size,
            rank=0,
            world_size=args.world_size,
            seed=0,
            order=order,
            shape=shape,
            augment=augment,
            prefetch=prefetch,
        )
        load = time.perf_counter() - start
        per_batch = loader_speed(tb, args.steps)
        wait = wait_per_step(tb, args.stall_steps, work)
        print(
            f"| {order} | {shape} | {'shift 2, rotate 10' if augment else 'off'} "
            f"| {'on' if prefetch else 'off'} | {load:.2f} | {1 / per_batch:,.0f} "
            f"| {args.batch / per_batch:,.0f} | {per_batch * 1e3:.2f} | {wait * 1e3:.2f} |"
        )


if __name__ == "__main__":
    main()
