"""Hyper-parameter search (book section 6.5): random search in log space over the learning
rate and the weight decay, scored on a validation split held out from training, with the
trials run in parallel across MPI ranks.

The world is split into groups of --group-size ranks (`comm.split(color)`); each group runs
its share of the trials one after another, data-parallel inside the group (each rank takes
a slice of every batch; the gradients are averaged with one allreduce in the group's
communicator). Every rank draws the same list of trials from the same seed, so nothing but
the results needs to be sent: world rank 0 gathers them, prints the table and plots.

The validation images are the /val split of `mpinet prepare --val 5000`: never trained on,
and not the test set, which must stay unseen while choosing hyper-parameters. Without --data
the file is mpinet's cache's mnist-val5000.h5 (beside the mnist.h5 of `mpinet prepare`),
prepared on first use; `mpinet prepare --val 5000 --out ~/.cache/mpinet/mnist-val5000.h5`
makes the same file.

    mpiexec -n 4 python examples/10_hyperparameter_search.py --group-size 2 [--trials 20]
    python examples/10_hyperparameter_search.py          # one process: every trial in turn
"""

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
from common import example_parser, missing_file, mnist_file, plt, save

from mpinet.cluster import auto
from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create


def run_trial(group, lr, wd, data, epochs, batch_size=100, seed=0):
    """Train one MLP data-parallel in `group`; return its validation accuracy."""
    x, t, x_val, t_val = data
    net = build({"name": "mlp", "hidden": [100, 100], "weight_decay": wd}, seed=seed)
    opt = create("sgd", lr=lr)
    rng = np.random.default_rng(seed)  # the same batches on every rank of the group
    for _ in range(epochs * len(x) // batch_size):
        idx = rng.choice(len(x), batch_size, replace=False)[group.rank :: group.world_size]
        net.loss(x[idx], t[idx])
        net.backward()
        group.allreduce_mean_(net.buffer.grad)  # dist: equal local batches, so mean = global
        opt.update(net.buffer.data, net.buffer.grad)
    return net.accuracy(x_val, t_val)


VAL = 5000  # validation images held out of the 60000 training images


def val_file(text):
    """--data: an existing MNIST file with a /val split."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(missing_file(path, VAL))
    with h5py.File(path, "r") as f:
        if "val" not in f:
            raise argparse.ArgumentTypeError(
                f"{path}: has no /val split; expected a file made by `mpinet prepare --val N`; "
                f"run `mpinet prepare --val {VAL} --out FILE.h5` and pass that file"
            )
    return path


def load(path, n_train, n_val):
    with h5py.File(path, "r") as f:
        x, t = f["train/images"][:n_train], f["train/labels"][:n_train]
        x_val, t_val = f["val/images"][:n_val], f["val/labels"][:n_val]
    return (
        x.reshape(-1, 784) / np.float32(255),
        t.astype(np.int64),
        x_val.reshape(-1, 784) / np.float32(255),
        t_val.astype(np.int64),
    )


def parser():
    p = example_parser(__doc__, "10_hyperparameter_search", data=False)
    p.add_argument(
        "--data",
        metavar="FILE.h5",
        type=val_file,
        help="an MNIST file with a /val split, made by `mpinet prepare --val N` "
        f"(default: mnist-val{VAL}.h5 in mpinet's cache, prepared on first use)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="random (learning rate, weight decay) pairs to try (default: %(default)s)",
    )
    p.add_argument(
        "--train", type=int, default=2000, help="training samples per trial (default: %(default)s)"
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial (default: %(default)s)")
    p.add_argument(
        "--group-size",
        type=int,
        default=1,
        help="ranks per trial; must divide the world size (default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="4 trials, 300 samples, 2 epochs, for a smoke test (default: off)",
    )
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    limit_threads(args.threads, default=1)
    trials, n_train, epochs = (4, 300, 2) if args.quick else (args.trials, args.train, args.epochs)
    world = auto()
    if world.world_size % args.group_size:
        raise SystemExit(
            f"--group-size {args.group_size}: does not divide the world size "
            f"{world.world_size}; expected a divisor of it; choose another"
        )
    n_groups = world.world_size // args.group_size
    group = world.split(world.rank // args.group_size, key=world.rank)

    # dist: one rank prepares the file (with 5000 validation images) and tells the others.
    path = str(mnist_file(args.data, val=VAL)) if world.is_root else None
    data = load(world.bcast_object(path), n_train, 1000)

    rng = np.random.default_rng(0)  # the same draws on every rank: the book's ranges
    lrs, wds = 10 ** rng.uniform(-6, -2, trials), 10 ** rng.uniform(-8, -4, trials)
    mine = []
    share = range(world.rank // args.group_size, trials, n_groups)  # this group's trials
    for i in share:
        acc = run_trial(group, lrs[i], wds[i], data, epochs)
        if group.is_root:
            mine.append((i, float(lrs[i]), float(wds[i]), acc, world.rank))
            # Progress, one write per line: the ranks' lines must not interleave mid-line.
            sys.stderr.write(
                f"rank {world.rank}: trial {i} done ({len(mine)}/{len(share)} of "
                f"its group's), val accuracy {acc:.3f}\n"
            )
            sys.stderr.flush()
    gathered = world.gather_object(mine)
    if not world.is_root:
        return None
    results = sorted((r for part in gathered for r in part), key=lambda r: -r[3])
    print(f"{trials} trials on {n_groups} group(s) of {args.group_size} rank(s)")
    report(results, trials, args.out)
    return results  # [(trial, lr, weight decay, val accuracy, world rank of its group root)]


def report(results, trials, out):
    """The table, best first, and the scatter plot of the search."""
    print(" rank  trial          lr    weight decay   val accuracy")
    for i, lr, wd, acc, rank in results:
        print(f"{rank:5d} {i:6d} {lr:11.2e} {wd:15.2e} {acc:14.3f}")
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    sc = ax.scatter(
        [r[1] for r in results],
        [r[2] for r in results],
        c=[r[3] for r in results],
        cmap="viridis",
        s=60,
        edgecolors="k",
    )
    fig.colorbar(sc, label="validation accuracy")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel="weight decay",
        title=f"random search, {trials} trials",
    )
    save(fig, out, "search.png")


if __name__ == "__main__":
    main()
