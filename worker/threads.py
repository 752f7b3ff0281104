"""BLAS threads per rank: ranks on this node x threads must not exceed its cores.

Oversubscribed BLAS threads (4 ranks x 2 threads on 2 cores) spin against each other and
can make a step many times slower, so every rank limits its BLAS pool before training.
"""

import os

from threadpoolctl import threadpool_info, threadpool_limits


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def blas_threads_for(local_size, requested=0):
    """requested > 0 wins; else this node's cores shared among its ranks, at least 1."""
    if requested > 0:
        return requested
    return max(1, available_cores() // max(local_size, 1))


def pin_blas_threads(threads):
    """Limit every BLAS pool of this process to `threads`; returns what threadpoolctl saw."""
    threadpool_limits(limits=threads, user_api="blas")
    return [
        (i["internal_api"], i.get("architecture"), i["num_threads"])
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
