"""`mpinet eval`: accuracy, loss, per-class accuracy and confusion matrix of a checkpoint.

    mpinet eval runs/x [--data FILE.h5] [--split test|train|val] [--json]
    mpirun -n 4 mpinet eval ...      # each rank evaluates its share; counts are summed

CHECKPOINT is a file, a run directory (its newest valid checkpoint) or a `latest`/`best`
pointer: rank 0 chooses the file and tells the others, so every rank reads the same one even
while a run is writing new checkpoints. Every sample of the split is counted exactly once:
each rank takes its contiguous share (eval_share), and the sums (loss, counts, the confusion
matrix) are added across ranks before anything is divided. Rank 0 prints.
"""

import json
import logging

import numpy as np

from mpinet.cluster import USER_ERRORS, abort_on_error, auto, fail_together, on_root
from mpinet.data import class_names, eval_share, open_checked
from mpinet.data.h5file import split_names
from mpinet.model.checkpoint import network, read, resolve

from .checkpoint_dir import warn_skipped
from .cli import print_out
from .log import setup_logging
from .predict import CHECKPOINT_HELP, checkpoint_config, data_path, trained_on

HELP = "evaluate a checkpoint on a data split: accuracy, loss, per-class accuracy, confusion matrix"
SPLITS = ("test", "train", "val")
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--data", metavar="FILE.h5", help="the HDF5 data file (default: the one the run trained on)"
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=SPLITS,
        help="the split to evaluate: test, train or val (val only in a file "
        "prepared with --val N; default test)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    comm = auto()
    setup_logging(comm.rank, comm.world_size)
    with abort_on_error(comm, user_errors=USER_ERRORS):
        chosen = choose_checkpoint(args.checkpoint, comm)
        error, result = None, None
        try:
            result = load_share(chosen, args, comm)
        except USER_ERRORS as e:
            error = e
        fail_together(comm, "loading the checkpoint and data", error)  # dist
        net, path, x, t, names = result
        counts, loss_sum = tally(net, x, t)
        loss_sum = np.array([loss_sum])
        comm.allreduce_sum_(counts)  # dist: every sample counted once over all ranks
        comm.allreduce_sum_(loss_sum)  # dist
        if comm.is_root:
            report = summarise(counts, loss_sum[0], chosen, path, args.split)
            report["class_names"] = names
            report["ranks"] = comm.world_size
            print_out(json.dumps(report) if args.json else format_report(report))
    return 0


def choose_checkpoint(given, comm):
    """The checkpoint file CHECKPOINT means, chosen on rank 0 and told to every rank."""
    return on_root(comm, "finding the checkpoint", lambda: resolve(given, skipped=warn_skipped))


def load_share(chosen, args, comm):
    """(network, data path, this rank's x, t, class names): every rank reads the file."""
    ckpt = read(chosen)
    net = network(ckpt)
    path = data_path(ckpt, args.data)
    check_data(ckpt, path, args.split)
    normalize = checkpoint_config(ckpt).get("data", {}).get("normalize", "unit")
    x, t = eval_share(
        path,
        args.split,
        comm.rank,
        comm.world_size,
        dtype=ckpt.dtype,
        shape=net.input_layout,
        normalize=normalize,
    )
    return net, path, x, t, class_names(trained_on(ckpt), int(net.spec["output_size"]))


def check_data(ckpt, path, split):
    """A network is evaluated on the data set it learned (MNIST digits are no shoes), on a
    split the file has."""
    expected = checkpoint_config(ckpt).get("data", {}).get("dataset")
    with open_checked(path) as f:  # the whole layout checked, one line if it is wrong
        found, splits = str(f.attrs["dataset"]), split_names(f)
    if expected is not None and found != expected:
        raise ValueError(
            f"data file {path}: holds {found}; expected {expected}, the data set "
            f"checkpoint {ckpt.path} was trained on; pass a {expected} file to "
            f"--data"
        )
    if split not in splits:
        raise ValueError(
            f"data file {path}: has no /{split} split; expected one of "
            f"{', '.join(splits)}; prepare a file with `mpinet prepare --val N` "
            f"for /val, or pass --split test"
        )


def tally(net, x, t, batch_size=1000):
    """(counts[true, predicted] as int64, the SUM of per-sample losses) of this share:
    sums ranks can add. The one evaluation of both `mpinet eval` and training, through the
    network's own loss layer (the loss of training, without weight decay)."""
    k = int(net.spec.get("output_size", 10))
    counts, loss_sum = np.zeros(k * k, np.int64), 0.0
    for i in range(0, len(x), batch_size):
        xb, tb = x[i : i + batch_size], t[i : i + batch_size]
        y = net.forward(xb, train=False)
        loss_sum += float(net.loss_layer.forward(y, tb)) * len(tb)
        counts += np.bincount(tb * k + y.argmax(axis=1), minlength=k * k)
    return counts.reshape(k, k), loss_sum


def summarise(counts, loss_sum, checkpoint, data, split):
    n = int(counts.sum())
    per_class = counts.diagonal() / np.maximum(counts.sum(axis=1), 1)
    return {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "samples": n,
        "accuracy": float(counts.trace() / n) if n else 0.0,
        "loss": float(loss_sum / n) if n else 0.0,
        "per_class_accuracy": [round(float(a), 6) for a in per_class],
        "confusion_matrix": counts.tolist(),
    }


def format_report(r):
    k = len(r["confusion_matrix"])
    correct = sum(r["confusion_matrix"][i][i] for i in range(k))
    names = r.get("class_names") or [str(label) for label in range(k)]
    digits = names == [str(label) for label in range(k)]
    width = max(map(len, names))
    lines = [
        f"checkpoint {r['checkpoint']}",
        f"data {r['data']} /{r['split']}: {r['samples']} samples on {r['ranks']} rank(s)",
        f"accuracy {r['accuracy']:.4f} ({correct}/{r['samples']})  loss {r['loss']:.4f}",
        "per-class accuracy:",
    ]
    for label, (acc, row) in enumerate(
        zip(r["per_class_accuracy"], r["confusion_matrix"], strict=True)
    ):
        name = "" if digits else f" {names[label]:<{width}}"  # MNIST: the label is the name
        lines.append(f"  {label}{name}  {acc:.4f}  ({row[label]}/{sum(row)})")
    lines.append("confusion matrix (rows: true label, columns: predicted):")
    lines.append("     " + "".join(f"{j:>6}" for j in range(k)))
    for i, row in enumerate(r["confusion_matrix"]):
        lines.append(f"  {i:>2} " + "".join(f"{c:>6}" for c in row))
    return "\n".join(lines)
