"""Allreduce latency and bandwidth: blocking MPI vs mpinet's Comm, with and without watchdog.

    mpiexec -n 2 python benchmarks/allreduce.py
    mpiexec -n 4 python benchmarks/allreduce.py      # 4 ranks on 2 cores: oversubscribed

Three ways to run the same in-place float32 sum, interleaved round by round so that a noisy
machine hurts them alike:
    blocking   mpi4py's Allreduce(IN_PLACE, buf, op=SUM): the floor
    no-timeout Comm(timeout=None).allreduce_sum_: Iallreduce, then a blocking Wait()
    watchdog   Comm(timeout=300).allreduce_sum_: Iallreduce, polled by the stall watchdog
Rank 0 prints a Markdown table: the mean time per call (the slowest rank's), as the median
and the best of the rounds (the best shows the cost itself on a shared, noisy machine), the
algorithm bandwidth (bytes / median time) and the bus bandwidth (x 2(n-1)/n, what each
rank's link carries in a ring allreduce).
"""

import argparse
import os
import time

import numpy as np
from mpi4py import MPI

from mpinet.cluster import Comm

SIZES = {"8 B": 2, "1 MiB": 262144}  # float32 elements


def blocking(mpi_comm):
    return lambda buf: mpi_comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)


def seconds_per_call(mpi_comm, fn, buf, calls):
    """Mean seconds per call on the slowest rank."""
    mpi_comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(buf)
    return mpi_comm.allreduce((time.perf_counter() - t0) / calls, op=MPI.MAX)


def measure(mpi_comm, variants, n, rounds, calls):
    """Every variant's seconds per call, one per round."""
    buf = np.ones(n, np.float32)
    results = {name: [] for name in variants}
    for fn in variants.values():  # warm up: first-touch, algorithm selection
        seconds_per_call(mpi_comm, fn, buf, min(calls, 100))
    for _ in range(rounds):
        for name, fn in variants.items():
            results[name].append(seconds_per_call(mpi_comm, fn, buf, calls))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2, help="per round and variant")
    args = parser.parse_args()
    mpi_comm = MPI.COMM_WORLD
    variants = {
        "blocking": blocking(mpi_comm),
        "no-timeout": Comm(mpi_comm, timeout=None).allreduce_sum_,
        "watchdog": Comm(mpi_comm, timeout=300.0).allreduce_sum_,
    }
    ranks = mpi_comm.Get_size()
    if mpi_comm.Get_rank() == 0:
        print(
            f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n\n"
            "| ranks | size | variant | median (µs) | best (µs) | algbw (GB/s) | busbw (GB/s) |\n"
            "|---|---|---|---|---|---|---|"
        )
    for label, n in SIZES.items():
        probe = seconds_per_call(mpi_comm, variants["blocking"], np.ones(n, np.float32), 20)
        calls = max(10, min(20000, int(args.seconds / probe)))
        calls = mpi_comm.bcast(calls)
        results = measure(mpi_comm, variants, n, args.rounds, calls)
        if mpi_comm.Get_rank() == 0:
            for name, times in results.items():
                t = float(np.median(times))
                algbw = 4 * n / t / 1e9
                busbw = algbw * 2 * (ranks - 1) / ranks
                print(
                    f"| {ranks} | {label} | {name} | {t * 1e6:.1f} | {min(times) * 1e6:.1f} | "
                    f"{algbw:.2f} | {busbw:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
