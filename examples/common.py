"""Helpers the examples share: their flags, MNIST from mpinet's cache, saving a figure, the
book's mini-batch loop with a progress display.

Kept small on purpose: each example should still read top to bottom on its own.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display: examples run on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

from mpinet.data.prepare import default_out, prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def example_parser(doc, name, data=True):
    """The flags every example shares: --out for its figures, --threads, and --data for the
    MNIST ones. The description is the docstring's first paragraph, whole."""
    first_paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    p = argparse.ArgumentParser(description=first_paragraph)
    p.add_argument(
        "--out",
        metavar="DIR",
        default=f"examples/out/{name}",
        help="directory for the figures (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=thread_count,
        help="BLAS threads, set by mpinet.model.limit_threads (default: "
        "$MPINET_BLAS_THREADS, else 1: these small matrices gain nothing from "
        "more, and a busy machine made 2 threads 5-17x slower)",
    )
    if data:
        p.add_argument(
            "--data",
            metavar="FILE.h5",
            type=data_file,
            help="an MNIST file made by `mpinet prepare` (default: mpinet's cache, "
            f"{default_out('mnist')}, prepared on first use)",
        )
    return p


def thread_count(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text}: not a thread count; expected a whole number >= 1, e.g. --threads 1"
        )
    return int(text)


def data_file(text):
    """--data: an explicit file must exist; it is never created under a mistyped name."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(missing_file(path))
    return path


def missing_file(path, val=0):
    """The one-line error for a --data file that does not exist, naming the command to run."""
    prepare_args = f"--val {val} --out {path}" if val else f"--out {path}"
    return (
        f"{path}: no such file; expected an MNIST HDF5 file made by `mpinet prepare`; "
        f"run `mpinet prepare {prepare_args}`, or leave --data out to use the cache"
    )


def data_source():
    """The canonical MNIST .gz files: $MPINET_DATA_SOURCE, else ../shared/data beside the
    repository (offline use) when it exists, else None: the download mirrors."""
    shared = REPO.parent / "shared" / "data"
    return os.environ.get("MPINET_DATA_SOURCE") or (str(shared) if shared.is_dir() else None)


def cache_file(val=0):
    """mpinet's default data file, the one `mpinet prepare` and `mpinet train` use; with a
    validation split of `val` images, mnist-val<val>.h5 beside it."""
    default = default_out("mnist")
    return default.with_name(f"mnist-val{val}.h5") if val else default


def mnist_file(path=None, val=0):
    """An MNIST HDF5 file: `path` (--data) if given, else cache_file(val), prepared once."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(missing_file(path, val))
        return Path(path)
    return prepare("mnist", source=data_source(), out=cache_file(val), val=val)


def load_mnist(path=None, n_train=None, n_test=None, split_test="test", flat=True):
    """(x_train, t_train, x_test, t_test): pixels scaled to [0, 1], labels as int64.

    Only the first n samples of each split are read (MNIST is shuffled already).
    """
    with h5py.File(mnist_file(path), "r") as f:
        x_tr, t_tr = f["train/images"][:n_train], f["train/labels"][:n_train]
        x_te, t_te = f[f"{split_test}/images"][:n_test], f[f"{split_test}/labels"][:n_test]
    shape = (-1, 784) if flat else (-1, 1, 28, 28)
    scale = np.float32(1 / 255)  # the network refuses uint8 pixels: floats in [0, 1]
    return (
        x_tr.reshape(shape) * scale,
        t_tr.astype(np.int64),
        x_te.reshape(shape) * scale,
        t_te.astype(np.int64),
    )


def save(fig, out, name):
    """Write `fig` as out/name (PNG) and return the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


class Progress:
    """A tqdm bar when `stream` (stderr) is a terminal, else a line every `every` steps
    (about 10 lines per loop): long examples must show that they are moving."""

    def __init__(self, total, label, stream=None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.every = max(1, total // 10)
        self.start = time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, file=self.stream, leave=False)

    def update(self, done, loss):
        """Step `done` (1-based) has finished with this loss."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif done % self.every == 0 or done == self.total:
            seconds = time.perf_counter() - self.start
            self.stream.write(
                f"{self.label}: step {done}/{self.total}, loss {loss:.4f}, {seconds:.1f} s\n"
            )  # one write: lines never interleave
            self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(
    net,
    opt,
    x,
    t,
    steps,
    batch_size=100,
    seed=0,
    every=None,
    x_test=None,
    t_test=None,
    label="train",
):
    """Plain mini-batch training, the book's loop: returns the loss of every step, and
    (when `every` is set) train and test accuracy every `every` steps."""
    rng = np.random.default_rng(seed)
    losses, train_acc, test_acc = [], [], []
    progress = Progress(steps, label)
    for step in range(steps):
        idx = rng.choice(len(x), min(batch_size, len(x)), replace=False)
        losses.append(net.loss(x[idx], t[idx]))
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
        if every and (step + 1) % every == 0:
            train_acc.append(net.accuracy(x, t))
            test_acc.append(net.accuracy(x_test, t_test))
        progress.update(step + 1, losses[-1])
    progress.close()
    return np.array(losses), train_acc, test_acc
