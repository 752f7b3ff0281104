"""The alpha-beta cost of one allreduce, as MPICH runs it: what `mpinet scale` predicts with.

A message of m bytes over a link costs alpha + m * beta (alpha: one-way latency, beta:
seconds per byte = 8 / bits per second); reducing m bytes costs m * gamma (this machine's
rate of a float sum). MPICH's Iallreduce (its generic tuning file, "collective=iallreduce")
picks, for a built-in op such as SUM:

    m <= 2048 bytes, or fewer values than ranks: recursive doubling, log2(p) rounds in each of
        which every rank swaps its whole vector with a partner and adds it:
        log2(p) * (alpha + m * beta + m * gamma)
    otherwise: Rabenseifner's reduce-scatter (recursive halving) then allgather (recursive
        doubling); each rank sends and receives (p-1)/p * m bytes in each half:
        2 log2(p) * alpha + 2 (p-1)/p * m * beta + (p-1)/p * m * gamma

p is the largest power of two <= N. For the N - p ranks left over, both algorithms first fold
them into a partner (its whole vector sent and added) and send them the result at the end:
2 (alpha + m * beta) + m * gamma more. A ring (2 (N-1) alpha + 2 (N-1)/N m beta) is what NCCL
and Horovod use; it moves the same bytes with more latency, so MPICH keeps Rabenseifner.
"""

import math
import re
import time

import numpy as np

SHORT_BYTES = 2048  # MPICH: the short-message (recursive doubling) limit
# Named links: the rate a tc profile of benchmarks/cluster.py shapes, and a typical one-way
# latency of MPI over TCP on such a network (stated, not measured here: README, "Scale").
LINKS = {
    "10gbe": (10e9, 20e-6),
    "1gbe": (1e9, 50e-6),
    "wan": (100e6, 1e-3),
}
RATE = re.compile(r"([0-9.]+)\s*([kmg])bit", re.IGNORECASE)
LATENCY = re.compile(r"([0-9.]+)\s*(us|ms|s)", re.IGNORECASE)
RATE_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}
LATENCY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def link(name, bits_per_second, latency_seconds):
    return {"name": name, "bits_per_second": bits_per_second, "latency_seconds": latency_seconds}


def parse_link(text):
    """'10gbe' | '1gbe' | 'wan' | 'RATE,LATENCY' (e.g. '25gbit,5us') -> a link dict."""
    if text in LINKS:
        return link(text, *LINKS[text])
    rate, _, latency = text.partition(",")
    r, lat = RATE.fullmatch(rate.strip()), LATENCY.fullmatch(latency.strip())
    if r is None or lat is None or float(r[1]) <= 0:
        raise ValueError(
            f"--link {text!r}: expected one of {', '.join(LINKS)} or RATE,LATENCY such as "
            f"25gbit,5us or 100mbit,2ms"
        )
    bits = float(r[1]) * RATE_UNITS[r[2].lower()]
    return link(text, bits, float(lat[1]) * LATENCY_UNITS[lat[2].lower()])


def allreduce_seconds(n, nbytes, link, gamma, values=None):
    """Seconds of one allreduce of `nbytes` over n ranks -> (seconds, algorithm name).

    gamma: bytes per second the reduction adds; values: the vector's length (default: float32
    values, nbytes / 4), which decides recursive doubling when fewer than p."""
    if n == 1:
        return 0.0, "none"
    alpha, beta = link["latency_seconds"], 8.0 / link["bits_per_second"]
    p = 2 ** int(math.log2(n))
    rounds = int(math.log2(p))
    values = nbytes // 4 if values is None else values
    fold = 2 * (alpha + nbytes * beta) + nbytes / gamma if n > p else 0.0
    if nbytes <= SHORT_BYTES or values < p:
        return fold + rounds * (alpha + nbytes * beta + nbytes / gamma), "recursive doubling"
    share = (p - 1) / p * nbytes
    seconds = fold + 2 * rounds * alpha + 2 * share * beta + share / gamma
    return seconds, "Rabenseifner"


def wire16_seconds(n, values, link, gamma, cast_seconds):
    """Seconds of the 16-bit wire's mean (cluster/wire.py) of `values` values over n ranks
    -> (seconds, algorithm name): the casts, an alltoall of 2-byte chunks (pairwise: n - 1
    rounds of m/n bytes), the owner's float32 sum, and an allgather of the mean chunks
    (recursive doubling for a power of two under 512 KiB, a ring otherwise; both move
    (n-1)/n * m bytes)."""
    if n == 1:
        return cast_seconds, "none"
    alpha, beta = link["latency_seconds"], 8.0 / link["bits_per_second"]
    m = 2 * values
    share = (n - 1) / n * m
    alltoall = (n - 1) * alpha + share * beta
    ring = bool(n & (n - 1)) or m >= 512 * 1024  # not a power of two, or large
    allgather = ((n - 1) if ring else math.log2(n)) * alpha + share * beta
    reduce = (n - 1) / n * 4 * values / gamma
    algorithm = "alltoall + " + ("ring" if ring else "recursive doubling") + " allgather"
    return cast_seconds + alltoall + reduce + allgather, algorithm


def cast_seconds(values, dtype, repeats=10):
    """This machine's seconds to round `values` float32 values to `dtype` and back (the
    16-bit wire's casts): median of `repeats`."""
    grad = np.ones(max(values, 1), np.float32)
    wire = np.empty(grad.size, dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        wire[...] = grad
        grad[...] = wire
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def reduce_rate(values, repeats=20):
    """This machine's bytes per second of an in-place float32 sum of `values` values (what
    the MPI library's reduction does to each received piece): median of `repeats`."""
    a, b = np.ones(max(values, 1024), np.float32), np.ones(max(values, 1024), np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(a, b, out=a)
        times.append(time.perf_counter() - t0)
    return a.nbytes / float(np.median(times))
