"""`mpinet predict`: the class of each image (or .npy array) according to a checkpoint.

    mpinet predict runs/x seven.png digits.npy --top 3       # runs/x: its newest valid checkpoint
    seven.png: 7  (7 0.9914, 1 0.0049, 2 0.0021)
    shoe.png: 9 Ankle boot  (Ankle boot 0.9100, Sneaker 0.0500, Sandal 0.0200)   # Fashion-MNIST

Images are made MNIST-like first (data/images.py); no MPI is needed. `Predictor` is the
part shared with `mpinet serve`: a network and the input conversion its training used.
"""

import json
import sys
import threading
import tomllib
from pathlib import Path

import h5py
import numpy as np

from mpinet.data import class_names
from mpinet.data.images import load_array, load_image
from mpinet.data.prepare import default_out
from mpinet.model.checkpoint import network, read

from .cli import print_out

HELP = (
    "predict the class (the digit, or the Fashion-MNIST article) of PNG/JPEG/PGM images "
    "or .npy arrays with a checkpoint"
)
CHECKPOINT_HELP = "a checkpoint file, a run directory or its checkpoints/latest"


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="an image of one digit or article (PNG, JPEG, PGM, ...), or a .npy "
        "array (n, 28, 28) or (n, 784)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=3,
        metavar="K",
        help="show the K most probable classes (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    predictor = Predictor(args.checkpoint, skipped=warn)
    if not 1 <= args.top <= predictor.classes:
        raise ValueError(
            f"--top {args.top}: out of range; expected 1..{predictor.classes} "
            f"(the network's classes); pass a K in that range"
        )
    inputs, images = read_inputs(args.inputs)  # every input is checked before any output
    probabilities = predictor.probabilities(images)
    rows = [
        prediction(name, p, args.top, predictor.names)
        for name, p in zip(inputs, probabilities, strict=True)
    ]
    if args.json:
        print_out(
            json.dumps(
                {
                    "checkpoint": str(predictor.path),
                    "dataset": predictor.dataset,
                    "predictions": rows,
                }
            )
        )
    else:
        for row in rows:
            print_out(format_row(row, predictor.digits))
    return 0


def warn(error):
    """An invalid checkpoint a run directory's search passed over: said on stderr, so that
    stdout stays the predictions alone."""
    print(f"mpinet predict: warning: skipping {error}", file=sys.stderr)


def format_row(row, digits):
    """'seven.png: 7  (7 0.9991, 3 0.0008, ...)'; with names that are not the digits:
    'shoe.png: 9 Ankle boot  (Ankle boot 0.9100, Sneaker 0.0500, ...)'."""
    if digits:
        top = ", ".join(f"{t['label']} {t['probability']:.4f}" for t in row["top"])
        return f"{row['input']}: {row['label']}  ({top})"
    top = ", ".join(f"{t['name']} {t['probability']:.4f}" for t in row["top"])
    return f"{row['input']}: {row['label']} {row['name']}  ({top})"


def read_inputs(paths):
    """(names, images (n, 28, 28) in [0, 1]): an image file is one digit, a .npy many."""
    names, images = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix.lower() == ".npy":
            array = load_array(path)
            names += [f"{path}[{i}]" for i in range(len(array))]
            images.append(array)
        else:
            names.append(str(path))
            images.append(load_image(path)[None])
    return names, np.concatenate(images)


def prediction(name, probabilities, top, names):
    """One input's row: its label and class name, every probability, the `top` classes."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return {
        "input": name,
        "label": int(order[0]),
        "name": names[order[0]],
        "probabilities": [round(float(p), 6) for p in probabilities],
        "top": [
            {"label": int(k), "name": names[k], "probability": float(probabilities[k])}
            for k in order
        ],
    }


class Predictor:
    """A checkpoint's network and its input conversion; safe to call from many threads.

    The layers keep activations on themselves during a forward pass, so two threads must
    never run one network at once: a lock serialises the forward passes.
    """

    def __init__(self, path, skipped=None):
        ckpt = read(path, skipped=skipped)  # a file, a pointer or a run directory
        self.path = ckpt.path  # the file chosen
        self.net = network(ckpt)
        self.classes = int(self.net.spec.get("output_size", 10))
        self.dataset = trained_on(ckpt)
        self.names = class_names(self.dataset, self.classes)
        self.digits = self.names == [str(k) for k in range(self.classes)]
        self.flat = self.net.input_layout == "flat"
        self.stats = pixel_stats(ckpt)
        self.lock = threading.Lock()

    def probabilities(self, images):
        """images (n, 28, 28), floats in [0, 1] (1 = ink) -> (n, classes) probabilities."""
        x = images.astype(self.net.dtype)
        if self.stats is not None:
            x -= self.stats[0]
            x /= self.stats[1]
        x = x.reshape((len(x), 784) if self.flat else (len(x), 1, 28, 28))
        with self.lock:
            return self.net.predict_proba(x).astype(np.float64)


def checkpoint_config(ckpt):
    """The training config stored in a checkpoint (meta "config", TOML text) as a dict."""
    text = ckpt.meta.get("config")
    if not isinstance(text, str):
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # read() checked it: only a Checkpoint made by hand
        raise ValueError(
            f"checkpoint {ckpt.path}: attribute config is not TOML ({e}); "
            f"expected the run's config; use a checkpoint `mpinet train` wrote"
        ) from None


def trained_on(ckpt):
    """The data set the checkpoint was trained on (data.dataset of its config; mnist)."""
    return str(checkpoint_config(ckpt).get("data", {}).get("dataset", "mnist"))


def data_path(ckpt, requested=None):
    """--data, else the data file the run trained on, else the cache's default file."""
    if requested:
        return Path(requested)
    data = checkpoint_config(ckpt).get("data", {})
    if data.get("path"):
        return Path(data["path"])
    return default_out(data.get("dataset", "mnist"))


def pixel_stats(ckpt):
    """(mean, std) when the run trained with data.normalize = "standard", else None.

    From the checkpoint's meta (pixel_mean, pixel_std), else from the run's data file.
    """
    if checkpoint_config(ckpt).get("data", {}).get("normalize", "unit") != "standard":
        return None
    if "pixel_mean" in ckpt.meta and "pixel_std" in ckpt.meta:
        return float(ckpt.meta["pixel_mean"]), float(ckpt.meta["pixel_std"])
    path = data_path(ckpt)
    try:
        with h5py.File(path, "r", locking=False) as f:
            return float(f.attrs["pixel_mean"]), float(f.attrs["pixel_std"])
    except (OSError, KeyError):
        raise ValueError(
            f"checkpoint {ckpt.path}: trained with data.normalize=standard but "
            f"holds no pixel_mean/pixel_std, and the data file {path} is not "
            f"readable; make it available"
        ) from None
