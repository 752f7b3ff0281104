"""`mpinet plot RUN_DIR`: the PNG plots a person looks at, drawn into the run directory.

    loss.png, accuracy.png   train and test per evaluation, from history.jsonl
    confusion.png            true x predicted labels over the whole test split
    misclassified.png        a grid of wrong test digits with their true and predicted labels

The last two need a network: the one just trained (at the end of a run) or the latest
checkpoint in RUN_DIR/checkpoints; without either they are skipped, and the reason is said.
matplotlib's object API (Figure, no pyplot) needs no display and keeps no global state.
"""

import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

log = logging.getLogger("mpinet.worker")

HELP = "redraw a run's plots from its history.jsonl and latest checkpoint"
CURVES = ("loss.png", "accuracy.png")
PREDICTIONS = ("confusion.png", "misclassified.png")
GRID = 6  # misclassified digits: GRID x GRID at most
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory `mpinet train` wrote")
    parser.add_argument("--checkpoint", metavar="FILE.h5",
                        help="use this checkpoint (default: the run's latest)")
    parser.add_argument("--data", metavar="FILE.h5",
                        help="the HDF5 data file (default: data.path of the run's config.toml)")


def run(args):
    written, skipped = write_plots(args.run_dir, checkpoint=args.checkpoint, data=args.data)
    for path in written:
        print(path)
    for names, reason in skipped.items():
        print(f"mpinet plot: skipped {names}: {reason}")
    return 0


def write_plots(run_dir, net=None, checkpoint=None, data=None):
    """Draw every plot into run_dir -> (paths written, {skipped names: reason}).

    `net`: the trained network (the end of a run); otherwise `checkpoint` or the run's latest
    checkpoint is loaded. A missing network or data file skips the prediction plots only.
    """
    run_dir = Path(run_dir)
    history = run_dir / "history.jsonl"
    if not history.is_file():
        raise FileNotFoundError(f"{run_dir} holds no history.jsonl; pass a run directory "
                                f"that `mpinet train --run-dir` wrote")
    written, skipped = [], {}
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    if rows:
        written += [plot_loss(rows, run_dir / CURVES[0]), plot_accuracy(rows, run_dir / CURVES[1])]
    else:
        skipped[", ".join(CURVES)] = "history.jsonl has no evaluations yet"
    try:
        t, y, images = predictions(run_dir, net, checkpoint, data)
        written += [plot_confusion(t, y, run_dir / PREDICTIONS[0]),
                    plot_misclassified(t, y, images, run_dir / PREDICTIONS[1])]
    except (OSError, ValueError, LookupError) as e:
        skipped[", ".join(PREDICTIONS)] = " ".join(str(e).split())
    for names, reason in skipped.items():
        log.info("plots: skipped %s: %s", names, reason)
    return written, skipped


# -- what the prediction plots need ------------------------------------------------------


def predictions(run_dir, net=None, checkpoint=None, data=None):
    """(true labels, predicted labels, images (n, 28, 28)) over the whole test split."""
    from mpinet.data import eval_share
    from mpinet.data.prepare import default_out

    from .config import load_config

    cfg = load_config(run_dir / "config.toml")
    if net is None:
        net = load_network(checkpoint or latest_checkpoint(run_dir))
    path = Path(data or cfg.data.path or default_out(cfg.data.dataset))
    if not path.is_file():
        raise FileNotFoundError(f"the data file {path} does not exist; pass --data FILE.h5")
    shape = "flat" if cfg.model.name == "mlp" else "image"
    x, t = eval_share(path, "test", 0, 1, dtype=cfg.model.dtype, shape=shape,
                      normalize=cfg.data.normalize)
    y = net.predict(x).argmax(axis=1)
    return t, y, x.reshape(len(x), 28, 28)


def latest_checkpoint(run_dir):
    """RUN_DIR/checkpoints/latest (a link, or a small file naming the checkpoint), else the
    newest ckpt-*.h5; LookupError when there is none."""
    folder = Path(run_dir) / "checkpoints"
    pointer = folder / "latest"
    if pointer.is_symlink():
        return pointer.resolve()
    if pointer.is_file():
        head = pointer.read_bytes()[:4096]
        return pointer if head.startswith(HDF5_MAGIC) else folder / head.decode().strip()
    found = sorted(folder.glob("ckpt-*.h5"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LookupError(f"no checkpoint in {folder} (train with checkpoints on, or pass "
                          f"--checkpoint FILE.h5)")
    return found[-1]


def load_network(path):
    try:
        from mpinet.model import load
    except ImportError:  # before mpinet.model re-exported it
        from mpinet.model.checkpoint import load
    return load(str(path))


# -- the plots ---------------------------------------------------------------------------


def plot_loss(rows, path):
    return _curves(rows, "loss", "cross-entropy loss", path)


def plot_accuracy(rows, path):
    return _curves(rows, "accuracy", "accuracy", path)


def _curves(rows, what, ylabel, path):
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    steps = [r["step"] for r in rows]
    for split in ("train", "test"):
        ax.plot(steps, [r[f"{split}_{what}"] for r in rows], marker="o", markersize=3,
                label=split)
    ax.set(xlabel="step", ylabel=ylabel, title=f"{what} per evaluation")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion(t, y, path, classes=10):
    """Counts of (true, predicted): the diagonal is right, the rest shows what is confused."""
    counts = np.bincount(t * classes + y, minlength=classes * classes).reshape(classes, classes)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    for i in range(classes):
        for j in range(classes):
            dark = counts[i, j] > counts.max() / 2
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true",
           title=f"confusion matrix, accuracy {np.mean(t == y):.4f} on {len(t)} test images")
    return _save(fig, path)


def plot_misclassified(t, y, images, path):
    """The first GRID*GRID wrong test digits in test-set order, titled true -> predicted."""
    wrong = np.flatnonzero(t != y)[:GRID * GRID]
    fig = Figure(figsize=(7, 7.6), layout="constrained")
    fig.suptitle(f"{np.count_nonzero(t != y)} misclassified test digits (first {len(wrong)})")
    for k in range(GRID * GRID):
        ax = fig.add_subplot(GRID, GRID, k + 1)
        ax.axis("off")
        if k < len(wrong):
            i = wrong[k]
            ax.imshow(images[i], cmap="gray_r")
            ax.set_title(f"#{i}: {t[i]} -> {y[i]}", fontsize=8)
    return _save(fig, path)


def _save(fig, path):
    """Write through a temporary name: a crash never leaves half a PNG under the real one."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path
