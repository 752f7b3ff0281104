"""One way for a job to fail, chosen by name: `mpiexec -n N python failures.py MODE`.

The tests run each mode and check that the whole job ends, how fast, with which exit code
and what it logged. The main loop stands in for the worker's: abort_on_error around steps
of one allreduce each; the odd rank (rank 1) is the one that misbehaves.
"""

import logging
import os
import signal
import sys
import time

import numpy as np

from mpinet import cluster

ODD = 1  # the rank that misbehaves


def mismatch(comm, what):
    """Rank ODD holds a different value; every rank prints the error it raised, then re-raises."""
    odd = comm.rank == ODD
    try:
        if what == "layout":
            layout = [("W1", (4, 5), "float32"), ("b1", (5,), "float32")]
            cluster.assert_same_layout(comm, layout + [("W2", (5, 2), "float32")] * odd)
        elif what == "params":
            cluster.assert_same_params(comm, np.full(8, 1.0 + odd, np.float32))
        elif what == "config":
            cluster.assert_same_config(comm, f"[optim]\nlr = {0.1 + odd}\n")
        elif what == "data":
            cluster.assert_same_data(comm, f"mnist sha256={'beef' if odd else 'cafe'}")
        elif what == "together":
            error = FileNotFoundError("data/mnist.h5 not found") if odd else None
            cluster.fail_together(comm, "opening the data", error)
    except cluster.AllRanksError as error:
        sys.stderr.write(f"raised on rank {comm.rank}: {error}\n")  # one write: one line
        raise


def misbehave(comm, mode, step):
    """What rank ODD does at step 3 instead of the allreduce."""
    if mode == "raise":
        raise ValueError(f"boom at step {step}")
    if mode == "user-error":
        raise ValueError("bad value in the data file")
    if mode == "exit":
        sys.exit(5)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "sleep":
        time.sleep(120)
    if mode == "skip":
        comm.barrier()  # a different collective than the others'


def train(comm, mode):
    if mode.startswith("mismatch-"):
        mismatch(comm, mode.removeprefix("mismatch-"))
    grad = np.ones(1000, np.float32)
    for step in range(1, 6):
        comm.step = step
        if comm.rank == ODD and step == 3:
            misbehave(comm, mode, step)
        comm.allreduce_mean_(grad)


def main():
    mode, timeout = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    comm = cluster.auto(timeout=timeout)
    if mode == "auto":
        sys.stdout.write(f"rank {comm.rank}: {type(comm).__name__}\n")
        return
    if mode == "excepthook":  # the sys.excepthook form, no context manager
        cluster.install_abort_handler(comm, user_errors=())  # every exception: a bug
        train(comm, "raise")
        return
    with cluster.abort_on_error(comm, user_errors=(ValueError,) * (mode == "user-error")):
        train(comm, mode)
    sys.stdout.write(f"rank {comm.rank}: finished\n")


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    main()
