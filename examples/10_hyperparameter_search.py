"""Hyper-parameter search (book section 6.5): random search in log space over the learning
rate and the weight decay, scored on a validation split held out from training, with the
trials run in parallel across MPI ranks.

The world is split into groups of --group-size ranks (`comm.split(color)`); each group runs
its share of the trials one after another, data-parallel inside the group (each rank takes
a slice of every batch; the gradients are averaged with one allreduce in the group's
communicator). Every rank draws the same list of trials from the same seed, so nothing but
the results needs to be sent: world rank 0 gathers them, prints the table and plots.

The validation images are the /val split of `mpinet prepare --val N`: never trained on,
and not the test set, which must stay unseen while choosing hyper-parameters.

    mpiexec -n 4 python examples/10_hyperparameter_search.py --group-size 2 [--trials 20]
    python examples/10_hyperparameter_search.py          # one process: every trial in turn
"""


import h5py
import numpy as np
from common import example_parser, mnist_file, plt, save

from mpinet.cluster import auto
from mpinet.model import build
from mpinet.model.optimizers import create


def run_trial(group, lr, wd, data, epochs, batch_size=100, seed=0):
    """Train one MLP data-parallel in `group`; return its validation accuracy."""
    x, t, x_val, t_val = data
    net = build({"name": "mlp", "hidden": [100, 100], "weight_decay": wd}, seed=seed)
    opt = create("sgd", lr=lr)
    rng = np.random.default_rng(seed)  # the same batches on every rank of the group
    for _ in range(epochs * len(x) // batch_size):
        idx = rng.choice(len(x), batch_size, replace=False)[group.rank::group.world_size]
        net.loss(x[idx], t[idx])
        net.backward()
        group.allreduce_mean_(net.buffer.grad)  # dist: equal local batches, so mean = global
        opt.update(net.buffer.data, net.buffer.grad)
    return net.accuracy(x_val, t_val)


def load(path, n_train, n_val):
    with h5py.File(path, "r") as f:
        x, t = f["train/images"][:n_train], f["train/labels"][:n_train]
        x_val, t_val = f["val/images"][:n_val], f["val/labels"][:n_val]
    return (x.reshape(-1, 784) / np.float32(255), t.astype(np.int64),
            x_val.reshape(-1, 784) / np.float32(255), t_val.astype(np.int64))


def main(argv=None):
    p = example_parser(__doc__, "10_hyperparameter_search", data=False)
    p.add_argument("--data", help="an MNIST HDF5 file with a /val split (prepare --val N)")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--train", type=int, default=2000, help="training samples")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--group-size", type=int, default=1, help="ranks per trial")
    p.add_argument("--quick", action="store_true", help="4 trials, 300 samples, 2 epochs")
    args = p.parse_args(argv)
    trials, n_train, epochs = (4, 300, 2) if args.quick else (args.trials, args.train,
                                                              args.epochs)
    world = auto()
    if world.world_size % args.group_size:
        raise SystemExit(f"--group-size {args.group_size} must divide the world size "
                         f"{world.world_size}")
    n_groups = world.world_size // args.group_size
    group = world.split(world.rank // args.group_size, key=world.rank)

    # dist: one rank prepares the file (with 5000 validation images) and tells the others.
    path = str(mnist_file(args.data, val=5000)) if world.is_root else None
    data = load(world.bcast_object(path), n_train, 1000)

    rng = np.random.default_rng(0)  # the same draws on every rank: the book's ranges
    lrs, wds = 10 ** rng.uniform(-6, -2, trials), 10 ** rng.uniform(-8, -4, trials)
    mine = []
    for i in range(world.rank // args.group_size, trials, n_groups):
        acc = run_trial(group, lrs[i], wds[i], data, epochs)
        if group.is_root:
            mine.append((i, float(lrs[i]), float(wds[i]), acc, world.rank))
    gathered = world.gather_object(mine)
    if not world.is_root:
        return None

    results = sorted((r for part in gathered for r in part), key=lambda r: -r[3])
    print(f"{trials} trials on {n_groups} group(s) of {args.group_size} rank(s)")
    print(" rank  trial          lr    weight decay   val accuracy")
    for i, lr, wd, acc, rank in results:
        print(f"{rank:5d} {i:6d} {lr:11.2e} {wd:15.2e} {acc:14.3f}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sc = ax.scatter([r[1] for r in results], [r[2] for r in results],
                    c=[r[3] for r in results], cmap="viridis", s=60, edgecolors="k")
    fig.colorbar(sc, label="validation accuracy")
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay",
           title=f"random search, {trials} trials")
    save(fig, args.out, "search.png")
    return results  # [(trial, lr, weight decay, val accuracy, world rank of its group root)]


if __name__ == "__main__":
    main()
