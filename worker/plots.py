"""`mpinet plot RUN_DIR`: the PNG plots a person looks at, drawn into the run directory.

    loss.png            train loss per logged step (steps.jsonl), test loss per evaluation
    accuracy.png        train and test accuracy per evaluation (history.jsonl)
    confusion.png       true x predicted labels over the whole test split
    misclassified.png   the most confident wrong test images, "true → predicted (p)"

At the end of training the loop passes the predictions of its final distributed evaluation
(no network runs here then); `mpinet plot` computes them from a checkpoint, on one process.
Without predictions the last two are skipped, and the reason is said. The figures themselves
are drawn in worker/figures.py.
"""

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpinet.data.atomic import replacing
from mpinet.data.messages import one_line
from mpinet.model.functions import softmax

from . import figures
from .files import read_jsonl, run_file

log = logging.getLogger(__name__)

HELP = "redraw a run's plots from its history, steps and latest checkpoint"
CURVES = ("loss.png", "accuracy.png")
PREDICTIONS = ("confusion.png", "misclassified.png")
HISTORY_KEYS = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
STEPS_KEYS = ("step", "train_loss")


@dataclass(frozen=True)
class Predictions:
    """The final evaluation over the whole test split, in the data file's order.

    t: true labels (int, n); y: predicted labels (int, n); p: the probability of the predicted
    label (float, n); images: the test images as stored, uint8 (n, 28, 28).
    """

    t: np.ndarray
    y: np.ndarray
    p: np.ndarray
    images: np.ndarray

    def __post_init__(self):
        n = len(self.t)
        shapes = {"t": (n,), "y": (n,), "p": (n,), "images": (n, 28, 28)}
        for name, shape in shapes.items():
            found = np.shape(getattr(self, name))
            if found != shape:
                raise ValueError(
                    f"Predictions.{name}: shape {found}; expected {shape} "
                    f"(n = len(t) = {n}); pass one entry per test image"
                )
        for name in ("t", "y"):
            kind = np.asarray(getattr(self, name)).dtype
            if kind.kind not in "iu":
                raise ValueError(
                    f"Predictions.{name}: dtype {kind}; expected integer labels; "
                    f"pass labels, not scores or probabilities"
                )
        if np.asarray(self.images).dtype != np.uint8:  # drawn on the 0..255 scale
            raise ValueError(
                f"Predictions.images: dtype {np.asarray(self.images).dtype}; "
                f"expected uint8; pass the images as stored in the data file, "
                f"not the network's (normalised) inputs"
            )


def from_scores(t, scores, images):
    """Predictions from a network's scores (before softmax) (n, classes)."""
    scores = np.asarray(scores, dtype=np.float64)
    p = softmax(scores).max(axis=1)  # the model's one softmax (mpinet.model.functions)
    return Predictions(np.asarray(t), scores.argmax(axis=1), p, np.asarray(images))


def concatenate(parts):
    """One Predictions from the ranks' parts (in rank order: each holds a contiguous share)."""
    return Predictions(
        *(np.concatenate([getattr(q, name) for q in parts]) for name in ("t", "y", "p", "images"))
    )


# -- the command -------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory `mpinet train` wrote")
    parser.add_argument(
        "--checkpoint", metavar="FILE.h5", help="use this checkpoint (default: the run's latest)"
    )
    parser.add_argument(
        "--data",
        metavar="FILE.h5",
        help="the HDF5 data file (default: data.path of the run's config.toml)",
    )


def run(args):
    for given, option in ((args.checkpoint, "--checkpoint"), (args.data, "--data")):
        if given and not Path(given).is_file():  # asked for: an error, not a skipped plot
            raise FileNotFoundError(
                f"{option} {given}: no such file; expected an HDF5 file; check the path"
            )
    written, skipped = write_plots(args.run_dir, checkpoint=args.checkpoint, data=args.data)
    for path in written:
        print(path)
    for names, reason in skipped.items():
        print(f"mpinet plot: skipped {names}: {reason}")
    return 0


def write_plots(run_dir, predictions=None, *, checkpoint=None, data=None):
    """Draw every plot into run_dir -> (paths written, {skipped names: reason}).

    `predictions`: the final evaluation (the end of a run); without it they come from
    `checkpoint` or checkpoint_for(run_dir), on the test split of `data` or the run's file.
    """
    run_dir = Path(run_dir)
    drawn, skipped = draw(run_dir, predictions, checkpoint, data)
    written = [save(fig, run_dir / name) for name, fig in drawn.items()]
    _log(written, skipped, run_dir)
    return written, skipped


def draw(run_dir, predictions=None, checkpoint=None, data=None):
    """({file name: Figure} of the plots that can be drawn, {skipped names: reason})."""
    run_dir = Path(run_dir)
    cfg, history, steps = read_run(run_dir)
    if predictions is not None and not isinstance(predictions, Predictions):
        raise TypeError(
            f"write_plots: predictions is a {type(predictions).__name__}; expected "
            f"mpinet.worker.plots.Predictions; build it with from_scores"
        )
    path = data_file(cfg, data)
    dataset = dataset_of(cfg, path)
    heading = figures.title(setting(cfg, "model.name"), dataset, run_dir.name)
    drawn, skipped = {}, {}
    if history:
        drawn[CURVES[0]] = figures.loss_figure(history, steps, heading)
        drawn[CURVES[1]] = figures.accuracy_figure(history, heading)
    else:
        skipped[", ".join(CURVES)] = "history.jsonl has no evaluations yet"
    if predictions is None:
        try:
            predictions = predict(cfg, checkpoint_for(run_dir, checkpoint), path)
        except (OSError, ValueError) as e:
            skipped[", ".join(PREDICTIONS)] = one_line(e)
    if predictions is not None:
        from mpinet.data import class_names

        names = class_names(dataset)
        drawn[PREDICTIONS[0]] = figures.confusion_figure(
            predictions.t, predictions.y, names, heading
        )
        drawn[PREDICTIONS[1]] = figures.misclassified_figure(predictions, names, heading)
    return drawn, skipped


def _log(written, skipped, run_dir):
    if written:
        log.info("plots: %s in %s", ", ".join(p.name for p in written), run_dir)
    for names, reason in skipped.items():
        log.info("plots: skipped %s: %s", names, reason)


def save(fig, path):
    """Write atomically (mpinet.data.atomic): a crash never leaves half a PNG, nor loses one."""
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


# -- reading the run directory -----------------------------------------------------------


def read_run(run_dir):
    """(config dict, history rows, steps rows) of a run; steps.jsonl may be absent (runs
    from before it existed): then the train curve comes from the history."""
    history, config = run_file(run_dir, "history.jsonl"), run_file(run_dir, "config.toml")
    try:
        cfg = tomllib.loads(config.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(
            f"{config}: not TOML ({e}); expected the config `mpinet train` "
            f"wrote; restore or rewrite it"
        ) from None
    steps = run_dir / "steps.jsonl"
    rows = read_rows(steps, STEPS_KEYS) if steps.is_file() else []
    return cfg, read_rows(history, HISTORY_KEYS), rows


def read_rows(path, keys):
    """The JSON objects of a .jsonl file, each checked to hold `keys`."""
    rows = read_jsonl(path)
    for number, row in enumerate(rows, 1):
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(
                f"{path}: object {number} lacks {', '.join(missing)}; expected "
                f"{', '.join(keys)}; pass a file that `mpinet train` wrote"
            )
    return rows


def setting(cfg, dotted):
    """cfg["model"]["name"] for "model.name"; a one-line error when config.toml lacks it."""
    section, key = dotted.split(".")
    value = cfg.get(section, {}).get(key)
    if value is None:
        raise ValueError(
            f"config.toml: no {dotted}; expected the resolved config `mpinet "
            f"train` writes; add {dotted} to it"
        )
    return value


def data_file(cfg, data=None):
    """--data, else the run's data.path, else where `mpinet train` would have prepared it."""
    from mpinet.data.prepare import default_out

    return Path(data or setting(cfg, "data.path") or default_out(setting(cfg, "data.dataset")))


def dataset_of(cfg, path):
    """The data file's own name for its data set: `--data fashion.h5` without
    `--set data.dataset=...` leaves data.dataset = "mnist" in config.toml."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            return str(f.attrs["dataset"])
    except (OSError, KeyError):  # no readable file: the config is all there is
        return setting(cfg, "data.dataset")


def checkpoint_for(run_dir, checkpoint=None):
    """The checkpoint `mpinet plot` predicts with: `checkpoint` if given (a file, a pointer
    or a directory), else the run's newest valid one (`latest` first), as every command
    that takes a checkpoint resolves it (model/checkpoint_paths.py)."""
    from mpinet.model.checkpoint import resolve

    if checkpoint:
        return resolve(checkpoint)
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no checkpoint; expected ckpt-*.h5 files there; "
            f"train with checkpoints on, or pass --checkpoint FILE.h5"
        )
    return resolve(folder)


def predict(cfg, checkpoint, path):
    """Predictions of the checkpoint's network over the whole test split of `path`."""
    from mpinet.data import eval_share, open_checked
    from mpinet.model import load

    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such data file; expected the run's HDF5 file; pass --data FILE.h5"
        )
    net = load(str(checkpoint))
    x, t = eval_share(
        path,
        "test",
        0,
        1,
        dtype=setting(cfg, "model.dtype"),
        shape=net.input_layout,
        normalize=setting(cfg, "data.normalize"),
    )
    with open_checked(path) as f:
        images = f["test"]["images"][:]  # uint8 as stored: what a person would see
    return from_scores(t, net.predict(x), images)
