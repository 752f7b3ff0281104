"""Hyper-parameter search (book section 6.5): random search in log space over the learning
rate and the weight decay, scored on a validation split held out from training, with the
trials run in parallel across MPI ranks — by `mpinet search`, the command this example drives.

The script writes the book's search space (lr 10**uniform(-6, -2), weight decay
10**uniform(-8, -4)) to OUT/space.toml and runs `mpinet search` in this process on every
rank: the world is split into groups of --group-size ranks (`comm.split`), each group trains
its share of the trials data-parallel, every trial an ordinary run directory under
OUT/search/. It then reads OUT/search/trials.jsonl to print the book's table and draw the
scatter of the two hyper-parameters. The same search from the command line:

    mpinet prepare --val 5000 --out mnist-val5000.h5
    mpiexec -n 4 mpinet search --space space.toml --trials 20 --ranks-per-trial 2 \\
        --data mnist-val5000.h5 --set data.eval_split="'val'" --set model.name="'mlp'" ...

The validation images are the /val split of `mpinet prepare --val 5000`: never trained on,
and not the test set, which must stay unseen while choosing hyper-parameters. Without --data
the file is mpinet's cache's mnist-val5000.h5 (beside the mnist.h5 of `mpinet prepare`),
prepared on first use; `mpinet prepare --val 5000 --out ~/.cache/mpinet/mnist-val5000.h5`
makes the same file.

    mpiexec -n 4 python examples/10_hyperparameter_search.py --group-size 2 [--trials 20]
    python examples/10_hyperparameter_search.py          # one process: every trial in turn
"""

import argparse
import json
from pathlib import Path

import h5py
from common import example_parser, missing_file, mnist_file, plt, save

from mpinet.cluster import auto
from mpinet.model import limit_threads
from mpinet.worker.cli import main as mpinet

SPACE = """[optim.lr]
log_uniform = [1e-6, 1e-2]

[model.weight_decay]
log_uniform = [1e-8, 1e-4]
"""
# Every trial: the book's 2x100 ReLU MLP with SGD, a fixed learning rate, scored on /val.
TRIAL = [
    "model.name='mlp'",
    "model.hidden=[100, 100]",
    "optim.name='sgd'",
    "optim.schedule='constant'",
    "data.eval_split='val'",
    "train.plots=false",
    "train.keep_last=1",
]
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
        "--steps",
        type=int,
        default=200,
        help="training steps of 100 images per trial (default: %(default)s)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=1,
        help="ranks per trial (mpinet search --ranks-per-trial); must divide the world size "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="4 trials of 20 steps, for a smoke test (default: off)",
    )
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    limit_threads(args.threads, default=1)
    trials, steps = (4, 20) if args.quick else (args.trials, args.steps)
    world = auto()
    # dist: one rank prepares the file (with 5000 validation images) and writes the space.
    out = Path(args.out)
    if world.is_root:
        path = str(mnist_file(args.data, val=VAL))
        out.mkdir(parents=True, exist_ok=True)
        (out / "space.toml").write_text(SPACE)
    path = world.bcast_object(path if world.is_root else None)
    command = ["search", "--space", str(out / "space.toml"), "--trials", str(trials)]
    command += ["--ranks-per-trial", str(args.group_size), "--search-dir", str(out / "search")]
    command += ["--data", path, "--seed", "0"]
    for setting in [*TRIAL, f"train.max_steps={steps}"]:
        command += ["--set", setting]
    code = mpinet(command)  # every rank: `mpinet search`, as under mpiexec
    if code:
        raise SystemExit(code)
    if not world.is_root:
        return None
    rows = [json.loads(line) for line in (out / "search" / "trials.jsonl").open()]
    groups = world.world_size // args.group_size
    results = sorted(
        (
            (
                r["trial"],
                r["values"]["optim.lr"],
                r["values"]["model.weight_decay"],
                r["score"],
                r["trial"] % groups * args.group_size,  # the world rank of its group's root
            )
            for r in rows
            if r["status"] == "ok"
        ),
        key=lambda r: -r[3],
    )
    print(f"{trials} trials on {groups} group(s) of {args.group_size} rank(s)")
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
