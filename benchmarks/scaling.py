"""Data-parallel training speed at 1, 2, 4 ... ranks, and the allreduce's share of a step.

    python benchmarks/scaling.py                          # mpinet, ranks 1 2 4, all models
    python benchmarks/scaling.py --ranks 1 2 4 8 16       # on a larger machine
    /work/benchvenv/bin/python benchmarks/scaling.py --torch   # + PyTorch DDP (gloo) side by side

Each rank trains on synthetic MNIST-shaped batches of --batch samples (weak scaling: the
global batch grows with the ranks), one BLAS thread per rank unless --threads says otherwise.
A step is forward + backward + ONE allreduce of the flat gradient + the optimizer update,
exactly the loop of worker/loop.py without the data pipeline (measured in docs/data.md).
Samples/s counts the global batch; the allreduce share is the median allreduce time over the
median step time on rank 0.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("mlp", "simple_cnn", "deep_cnn")
SPECS = {
    "mlp": {"name": "mlp", "hidden": [100, 100, 100, 100]},
    "simple_cnn": {"name": "simple_cnn"},
    "deep_cnn": {"name": "deep_cnn"},
}


def mpinet_worker(args):
    """One rank of the mpinet measurement; rank 0 prints one JSON line."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from mpinet.cluster import world
    from mpinet.model import build
    from mpinet.model.optimizers import create

    threadpool_limits(args.threads, user_api="blas")
    comm = world(timeout=None)
    net = build(SPECS[args.model], seed=0, dropout_seed=(0, comm.rank))
    comm.broadcast_(net.buffer.data)
    opt = create(args.optimizer, lr=0.01 if args.optimizer == "sgd" else 0.001)
    rng = np.random.default_rng(comm.rank)
    x = rng.random((args.batch, 784), dtype=np.float32)
    t = rng.integers(0, 10, args.batch)
    steps, reduces = [], []
    started = time.perf_counter()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            started = time.perf_counter()
        t0 = time.perf_counter()
        net.loss(x, t)
        net.backward()
        t1 = time.perf_counter()
        comm.allreduce_mean_(net.buffer.grad)
        t2 = time.perf_counter()
        opt.update(net.buffer.data, net.buffer.grad)
        t3 = time.perf_counter()
        if i >= args.warmup:
            steps.append(t3 - t0)
            reduces.append(t2 - t1)
    wall = time.perf_counter() - started  # every measured step, the slow ones too
    if comm.is_root:
        step = float(np.median(steps))
        print(
            json.dumps(
                {
                    "framework": "mpinet",
                    "model": args.model,
                    "ranks": comm.world_size,
                    "samples_per_second": args.batch * comm.world_size / step,
                    "samples_per_second_mean": args.batch * comm.world_size * args.steps / wall,
                    "allreduce_share": float(np.median(reduces)) / step,
                    "gradient_bytes": net.buffer.grad.nbytes,
                }
            ),
            flush=True,
        )


def run_mpinet(model, ranks, args):
    mpiexec = Path(sys.executable).with_name("mpiexec")
    command = [
        str(mpiexec) if mpiexec.exists() else "mpiexec",
        "-n",
        str(ranks),
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--optimizer",
        args.optimizer,
    ]
    env = dict(
        os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads)
    )
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=100, help="samples per rank per step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--torch", action="store_true", help="also PyTorch DDP (gloo)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return mpinet_worker(args)
    print(
        f"per-rank batch {args.batch}, {args.threads} BLAS thread(s) per rank, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}"
    )
    header = f"{'model':<12}{'ranks':>6}{'mpinet samples/s':>18}{'allreduce %':>13}"
    if args.torch:
        header += f"{'DDP samples/s':>15}{'ratio':>8}"
    print(header)
    for model in args.models:
        for ranks in args.ranks:
            r = run_mpinet(model, ranks, args)
            line = (
                f"{model:<12}{ranks:>6}{r['samples_per_second']:>18,.0f}"
                f"{100 * r['allreduce_share']:>12.1f}%"
            )
            if args.torch:
                from ddp import run_ddp

                d = run_ddp(model, ranks, args)
                line += f"{d:>15,.0f}{r['samples_per_second'] / d:>8.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
