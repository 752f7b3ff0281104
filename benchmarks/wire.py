"""The gradient's wire: the float32 allreduce against two ways to send 16-bit gradients.

    python benchmarks/wire.py                  # runs itself under mpiexec -n 2, then -n 4
    python benchmarks/wire.py --ranks 2 --rounds 5

On the gradients of mlp, deep_cnn and simple_cnn, interleaved round by round so that a
noisy machine hurts every variant alike (4 ranks on 2 cores are oversubscribed):
    float32      Comm.allreduce_mean_: one Iallreduce of the buffer (train's default)
    (a) op       round to 16 bits, one Iallreduce with a user-defined MPI op that upcasts,
                 adds in float32 and rounds back (every partial sum rounded), upcast, divide
    (b) a2a+ag   cluster/wire.py: alltoall_ of 16-bit chunks, each owner sums its chunk in
                 float32 in rank order, divides, rounds; allgather_ of the 16-bit means
    cast only    the two full-length casts every 16-bit way does (down, then up), no MPI
Prints a Markdown table: the slowest rank's mean time per call, median over the rounds, and
its ratio to float32 at the same size and world size.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

SIZES = {"mlp": 109810, "deep_cnn": 123552, "simple_cnn": 433890}  # parameters (float32)
DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def user_op(MPI, dtype):
    """(a): a sum over 16-bit words that adds in float32 and rounds the result back."""

    def add(inbuf, inoutbuf, datatype):
        a, b = np.frombuffer(inbuf, dtype), np.frombuffer(inoutbuf, dtype)
        np.add(b, a, out=b, dtype=np.float32)

    return MPI.Op.Create(add, commute=True)


def op_mean(comm, MPI, dtype):
    op, words = user_op(MPI, dtype), {}

    def mean_(grad):
        send = words.setdefault(grad.size, np.zeros(grad.size, np.uint16))
        send.view(dtype)[...] = grad
        comm._run("allreduce_16", send.nbytes, comm.mpi.Iallreduce, MPI.IN_PLACE, send, op)
        grad[...] = send.view(dtype)
        grad /= comm.world_size

    return mean_


def cast_only(dtype):
    words = {}

    def cast_(grad):
        send = words.setdefault(grad.size, np.zeros(grad.size, np.uint16))
        send.view(dtype)[...] = grad
        grad[...] = send.view(dtype)

    return cast_


def variants(comm, MPI):
    from mpinet.cluster.wire import Wire

    found = {"float32": comm.allreduce_mean_}
    for name, dtype in DTYPES.items():
        found[f"(a) op {name}"] = op_mean(comm, MPI, dtype)
        found[f"(b) a2a+ag {name}"] = Wire(comm, name).allreduce_mean_
    for name, dtype in DTYPES.items():
        found[f"cast only {name}"] = cast_only(dtype)
    return found


def seconds_per_call(comm, MPI, fn, grad, calls):
    """Mean seconds per call on the slowest rank."""
    comm.mpi.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(grad)
    return comm.mpi.allreduce((time.perf_counter() - t0) / calls, op=MPI.MAX)


def worker(args):
    """Under mpiexec: every variant on every size; rank 0 prints one JSON line per result."""
    from mpi4py import MPI

    from mpinet.cluster import world

    comm = world()
    fns = variants(comm, MPI)
    for label, n in SIZES.items():
        rng = np.random.default_rng((3, comm.rank))
        grad = (rng.standard_normal(n) * 1e-2).astype(np.float32)
        for fn in fns.values():  # warm up: first touch, algorithm selection
            seconds_per_call(comm, MPI, fn, grad, 10)
        probe = seconds_per_call(comm, MPI, fns["float32"], grad, 20)
        calls = comm.mpi.bcast(max(5, min(2000, int(args.seconds / probe / len(fns)))))
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(seconds_per_call(comm, MPI, fn, grad, calls))
        if comm.is_root:
            for name, found in times.items():
                row = {"ranks": comm.world_size, "size": label, "n": n, "variant": name}
                print(json.dumps({**row, "median": float(np.median(found))}), flush=True)


def launch(ranks, args):
    """Run this script's worker under mpiexec -n `ranks` -> its JSON rows."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks)]
    command += [sys.executable, __file__, "--worker", "--rounds", str(args.rounds)]
    command += ["--seconds", str(args.seconds)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def table(rows):
    lines = [
        "| ranks | gradient | variant | median (µs) | ratio to float32 |",
        "|---:|---|---|---:|---:|",
    ]
    base = {(r["ranks"], r["size"]): r["median"] for r in rows if r["variant"] == "float32"}
    for r in rows:
        ratio = r["median"] / base[r["ranks"], r["size"]]
        lines.append(
            f"| {r['ranks']} | {r['size']} ({r['n']}) | {r['variant']} | "
            f"{r['median'] * 1e6:.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per round, all variants")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    rows = [row for ranks in args.ranks for row in launch(ranks, args)]
    print(table(rows))


if __name__ == "__main__":
    main()
