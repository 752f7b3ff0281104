"""End to end: `mpinet train`'s samples/s against the bare step rate of the same net.

    MPINET_DATA_SOURCE=../shared/data python benchmarks/end_to_end.py  # mlp, simple_cnn; -n 1, 2
    MPINET_DATA_SOURCE=../shared/data python benchmarks/end_to_end.py --models mlp --rounds 7
    ... benchmarks/end_to_end.py --models mlp --set data.prefetch=false   # a variant

The bare rate is benchmarks/scaling.py's plain loop: forward, loss, backward, ONE allreduce
and the optimizer's update on a fixed batch, no data pipeline, no metrics, no progress, no
checkpoints; samples over the wall time of as many steps as the training run takes, first
step included. The training rate is summary.json's samples_per_second of `mpirun -n R mpinet
train` with the defaults a user gets (Adam, real MNIST, data.prefetch "auto", the pre-emption
check every step), per-rank batch 100 (train.batch_size = 100 x R), no plots, and one BLAS
thread per rank (train.blas_threads=1), as the bare loop has. Both are launched the same way
(mpiexec -n R). A shared machine's speed drifts by tens of percent from minute to minute, so
the two alternate, round after round, and the figure is the median of the rounds' ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import run_mpinet  # noqa: E402  (the bare loop)

EPOCHS = {"mlp": 3, "simple_cnn": 1, "deep_cnn": 1}


def run_train(model, ranks, epochs, run_dir, extra=()):
    mpiexec = Path(sys.executable).with_name("mpiexec")
    mpinet = Path(sys.executable).with_name("mpinet")
    command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(ranks), str(mpinet)]
    command += ["train", "--run-dir", str(run_dir)]
    for key, value in (
        ("model.name", model),
        ("train.epochs", epochs),
        ("train.batch_size", 100 * ranks),
        ("train.plots", "false"),
        ("train.log_every", 100_000),
        ("train.blas_threads", 1),  # as the bare loop; the default is cores / ranks
    ):
        command += ["--set", f"{key}={value}"]
    for setting in extra:
        command += ["--set", setting]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr}")
    return json.loads((run_dir / "summary.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "simple_cnn"], choices=EPOCHS)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for the training")
    args = parser.parse_args()
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
        f"per-rank batch 100, 1 BLAS thread per rank, adam; training settings: {args.set}"
    )
    print(f"{'model':<12}{'ranks':>6}{'train/s':>10}{'bare/s':>10}  ratio (median; rounds)")
    for model in args.models:
        for ranks in args.ranks:
            trains, bares = [], []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    summary = run_train(model, ranks, EPOCHS[model], Path(tmp) / "run", args.set)
                trains.append(summary["samples_per_second"])
                bare = argparse.Namespace(
                    batch=100, steps=summary["steps"], warmup=0, threads=1, optimizer="adam"
                )
                bares.append(run_mpinet(model, ranks, bare)["samples_per_second_mean"])
            ratios = np.array(trains) / np.array(bares)
            rounds = " ".join(f"{r:.2f}" for r in ratios)
            print(
                f"{model:<12}{ranks:>6}{np.median(trains):>10,.0f}{np.median(bares):>10,.0f}"
                f"  {np.median(ratios):.2f} ({rounds})",
                flush=True,
            )


if __name__ == "__main__":
    main()
