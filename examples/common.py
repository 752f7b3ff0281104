"""Helpers the examples share: find and read MNIST, save a figure, train a net for a while.

Kept small on purpose: each example should still read top to bottom on its own.
"""

import argparse
import os
from pathlib import Path

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display: examples run on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

from mpinet.data import prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def example_parser(doc, name, data=True):
    """The flags every example shares: --out for its figures, and --data for MNIST ones."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", default=f"examples/out/{name}")
    if data:
        p.add_argument("--data", help="an MNIST HDF5 file (default: prepared into examples/out)")
    return p


def data_source():
    """The canonical MNIST .gz files: $MPINET_DATA_SOURCE, else ../shared/data beside the repo."""
    return os.environ.get("MPINET_DATA_SOURCE") or str(REPO.parent / "shared" / "data")


def mnist_file(path=None, val=0):
    """An MNIST HDF5 file: `path` if given, else prepared once into examples/out/."""
    if path:
        return Path(path)
    out = REPO / "examples" / "out" / (f"mnist-val{val}.h5" if val else "mnist.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    return prepare("mnist", source=data_source(), out=out, val=val)


def load_mnist(path=None, n_train=None, n_test=None, split_test="test", flat=True):
    """(x_train, t_train, x_test, t_test): pixels scaled to [0, 1], labels as int64.

    Only the first n samples of each split are read (MNIST is shuffled already).
    """
    with h5py.File(mnist_file(path), "r") as f:
        x_tr, t_tr = f["train/images"][:n_train], f["train/labels"][:n_train]
        x_te, t_te = f[f"{split_test}/images"][:n_test], f[f"{split_test}/labels"][:n_test]
    shape = (-1, 784) if flat else (-1, 1, 28, 28)
    scale = np.float32(1 / 255)
    return (x_tr.reshape(shape) * scale, t_tr.astype(np.int64),
            x_te.reshape(shape) * scale, t_te.astype(np.int64))


def save(fig, out, name):
    """Write `fig` as out/name (PNG) and return the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def train(net, opt, x, t, steps, batch_size=100, seed=0, every=None, x_test=None, t_test=None):
    """Plain mini-batch training, the book's loop: returns the loss of every step, and
    (when `every` is set) train and test accuracy every `every` steps."""
    rng = np.random.default_rng(seed)
    losses, train_acc, test_acc = [], [], []
    for step in range(steps):
        idx = rng.choice(len(x), min(batch_size, len(x)), replace=False)
        losses.append(net.loss(x[idx], t[idx]))
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
        if every and (step + 1) % every == 0:
            train_acc.append(net.accuracy(x, t))
            test_acc.append(net.accuracy(x_test, t_test))
    return np.array(losses), train_acc, test_acc
