"""Transfer learning (book chapter 8): SimpleConvNet trained on MNIST digits, reused for
Fashion-MNIST clothes with 1,000 and with 60,000 labels, four ways, against training from
scratch: frozen convolution filters with new dense layers, fine-tuning every layer, and a
linear probe (a new last layer on the frozen 100 penultimate features).

Every run is `mpinet train` (called in this process, so `mpiexec -n 2` runs each
data-parallel): first on MNIST, then on Fashion-MNIST with `--init-from` that run,
`train.init_skip` naming the layers that start fresh and `train.freeze` the ones that never
change; `data.train_limit=1000` takes 100 labelled images per class. Every Fashion run has the
same schedule per label count (Adam, cosine, lr 0.001; the linear probe's --probe-lr, as its
1,010 parameters learn slowly at 0.001); the 1,000-label runs are repeated with --seeds
seeds (the table's ± is their spread), the 60,000-label ones run once. The same from the
command line:

    mpinet train --run-dir runs/mnist --set train.epochs=2
    mpinet train --run-dir runs/probe --init-from runs/mnist --set data.dataset="'fashion-mnist'" \\
        --set data.train_limit=1000 --set "train.init_skip=['affine2']" \\
        --set "train.freeze=['conv1', 'affine1']" --set optim.lr=0.01 --set train.epochs=20

    python examples/12_transfer.py [--quick]        # or: mpiexec -n 2 python examples/...
"""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from common import data_file, data_source, example_parser, mnist_file, plt, save

from mpinet.cluster import auto
from mpinet.data.prepare import default_out, prepare
from mpinet.model import limit_threads
from mpinet.worker.cli import main as mpinet

# How each Fashion run starts from the MNIST net: (init_skip, freeze); None: from scratch.
METHODS = {
    "from scratch": None,
    "frozen conv + new dense": (["affine"], ["conv1"]),
    "fine-tune all (new head)": (["affine2"], []),
    "linear probe": (["affine2"], ["conv1", "affine1"]),
}
COMMON = ["train.plots=false", "train.keep_last=1", "train.log_every=100"]
LR = 0.001  # Adam, cosine: every run but the linear probe (--probe-lr)


def parser():
    p = example_parser(__doc__, "12_transfer")
    p.add_argument(
        "--fashion",
        metavar="FILE.h5",
        type=data_file,
        help="a Fashion-MNIST file made by `mpinet prepare --dataset fashion-mnist` "
        f"(default: mpinet's cache, {default_out('fashion-mnist')}, prepared on first use)",
    )
    p.add_argument(
        "--pretrain-epochs", type=int, default=2, help="epochs on MNIST (default: %(default)s)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="epochs with all 60,000 Fashion labels (default: %(default)s)",
    )
    p.add_argument(
        "--small-epochs",
        type=int,
        default=20,
        help="epochs with 1,000 labels: 10 steps each (default: %(default)s)",
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds of the 1,000-label runs (default: %(default)s)"
    )
    p.add_argument(
        "--probe-lr",
        type=float,
        default=0.01,
        help="the linear probe's learning rate: it trains 1,010 parameters, and at the "
        f"others' {LR} it is still far from done (default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="20 MNIST steps, then 10 steps per run, one seed, for a smoke test (default: off)",
    )
    return p


def train(run_dir, settings, flags=()):
    """One `mpinet train` -> its summary (rank 0; None on the others)."""
    command = ["train", "--run-dir", str(run_dir), *flags]
    for setting in [*COMMON, *settings]:
        command += ["--set", setting]
    code = mpinet(command)  # every rank, as under mpiexec
    if code:
        raise SystemExit(code)
    summary = Path(run_dir) / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else None


def runs(args, world, mnist, fashion):
    """Every Fashion run -> {(labels, method): [test accuracy per seed]}, and the MNIST net."""
    out = Path(args.out) / "runs"
    if world.is_root and out.exists():
        shutil.rmtree(out)  # each run directory must be new
    world.barrier()
    threads = f"train.blas_threads={args.threads or 1}"
    steps = ["train.max_steps=20"] if args.quick else [f"train.epochs={args.pretrain_epochs}"]
    source = out / "mnist"
    train(source, [f"data.path='{mnist}'", threads, *steps])
    plans = {1000: (args.small_epochs, 1 if args.quick else args.seeds), 60000: (args.epochs, 1)}
    results = {}
    for labels, (epochs, seeds) in plans.items():
        for method, transfer in METHODS.items():
            for seed in range(seeds):
                settings = [f"data.path='{fashion}'", "data.dataset='fashion-mnist'", threads]
                settings += [f"data.train_limit={labels if labels < 60000 else 0}"]
                settings += [f"train.seed={seed}", f"train.epochs={epochs}"]
                settings += [f"optim.lr={args.probe_lr if method == 'linear probe' else LR}"]
                settings += ["train.max_steps=10"] if args.quick else []
                flags = []
                if transfer is not None:
                    skip, freeze = transfer
                    settings += [f"train.init_skip={skip}", f"train.freeze={freeze}"]
                    flags = ["--init-from", str(source)]
                name = f"{labels}-{method.split()[0]}-{method.split()[1]}-s{seed}"
                summary = train(out / name, settings, flags)
                if world.is_root:
                    results.setdefault((labels, method), []).append(
                        (summary["final_test_accuracy"], out / name)
                    )
    return results, source


def frozen_unchanged(source, run_dir, prefixes):
    """Whether the run's final parameters under `prefixes` are the MNIST net's, bit for bit."""
    paths = [Path(d) / "checkpoints" for d in (source, run_dir)]
    files = [p / (p / "latest").read_text().strip() for p in paths]
    with h5py.File(files[0], "r") as a, h5py.File(files[1], "r") as b:
        names = [n for n in b["params"] if n.startswith(tuple(prefixes))]
        return all(a["params"][n][()].tobytes() == b["params"][n][()].tobytes() for n in names)


def report(results, source, out):
    """The table (mean test accuracy, and the spread over seeds), and its bar chart."""
    print(f"{'labels':>7}  {'method':<26} {'test accuracy':>14}  {'vs scratch':>10}  frozen kept")
    table = {}
    for (labels, method), rows in results.items():
        accuracy = np.array([a for a, _ in rows])
        scratch = np.mean([a for a, _ in results[(labels, "from scratch")]])
        transfer = METHODS[method]
        kept = ""
        if transfer and transfer[1]:
            kept = all(frozen_unchanged(source, d, transfer[1]) for _, d in rows)
        spread = f" ±{accuracy.std():.3f}" if len(accuracy) > 1 else ""
        print(
            f"{labels:>7}  {method:<26} {accuracy.mean():>8.4f}{spread:>6}  "
            f"{100 * (accuracy.mean() - scratch):>+9.1f}p  {kept}"
        )
        table[(labels, method)] = {"accuracy": float(accuracy.mean()), "seeds": len(rows)}
        if kept != "":
            table[(labels, method)]["frozen_unchanged"] = kept
    figure(table, out)
    return table


def figure(table, out):
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    labels = sorted({k[0] for k in table})
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        values = [table[(n, method)]["accuracy"] for n in labels]
        bars = ax.bar(np.arange(len(labels)) + (i - 1.5) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small")
    lowest = min(v["accuracy"] for v in table.values())
    ax.set_xticks(range(len(labels)), [f"{n:,} Fashion labels" for n in labels])
    ax.set(ylabel="test accuracy", ylim=(max(0.0, lowest - 0.1), 1.0))
    ax.set_title("MNIST -> Fashion-MNIST, SimpleConvNet")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    save(fig, out, "transfer.png")


def main(argv=None):
    args = parser().parse_args(argv)
    limit_threads(args.threads, default=1)
    world = auto()
    if world.is_root:  # dist: one rank prepares the files
        files = str(mnist_file(args.data)), str(args.fashion or fashion_file())
    mnist, fashion = world.bcast_object(files if world.is_root else None)
    results, source = runs(args, world, mnist, fashion)
    if not world.is_root:
        return None
    return report(results, source, args.out)


def fashion_file():
    """mpinet's cache file of Fashion-MNIST, prepared once (as `mpinet prepare` would)."""
    return prepare("fashion-mnist", source=data_source(), out=default_out("fashion-mnist"))


if __name__ == "__main__":
    main()
