"""`mpinet eval`: accuracy, loss, per-class accuracy and confusion matrix of a checkpoint.

    mpinet eval runs/x/checkpoints/ckpt-00001800.h5 [--data FILE.h5] [--split test] [--json]
    mpirun -n 4 mpinet eval ...      # each rank evaluates its share; counts are summed

Every sample of the split is counted exactly once: each rank takes its contiguous share
(eval_share), and the sums (loss, counts, the confusion matrix) are added across ranks
before anything is divided. Rank 0 prints.
"""

import json
import logging

import numpy as np

from mpinet.cluster import abort_on_error, auto, fail_together
from mpinet.data import eval_share
from mpinet.model.checkpoint import network, read
from mpinet.model.functions import softmax_loss

from .log import setup_logging
from .predict import checkpoint_config, data_path

HELP = "evaluate a checkpoint on a data split: accuracy, loss, confusion matrix"
USER_ERRORS = (ValueError, OSError, KeyError)
log = logging.getLogger("mpinet.worker")


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (.h5)")
    parser.add_argument("--data", metavar="FILE.h5",
                        help="the HDF5 data file (default: the one the run trained on)")
    parser.add_argument("--split", default="test", help="the split to evaluate (default test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    comm = auto()
    setup_logging(comm.rank, comm.world_size)
    with abort_on_error(comm, user_errors=USER_ERRORS):
        error, result = None, None
        try:
            result = load_share(args, comm)
        except USER_ERRORS as e:
            error = e
        fail_together(comm, "loading the checkpoint and data", error)  # dist
        net, path, x, t = result
        counts, loss_sum = tally(net, x, t)
        comm.allreduce_sum_(counts)  # dist: every sample counted once over all ranks
        comm.allreduce_sum_(loss_sum)  # dist
        if comm.is_root:
            report = summarise(counts, loss_sum[0], args.checkpoint, path, args.split)
            report["ranks"] = comm.world_size
            print(json.dumps(report) if args.json else format_report(report))
    return 0


def load_share(args, comm):
    """(network, data path, this rank's x, t): every rank reads the checkpoint itself."""
    ckpt = read(args.checkpoint)
    net = network(ckpt)
    path = data_path(ckpt, args.data)
    normalize = checkpoint_config(ckpt).get("data", {}).get("normalize", "unit")
    shape = "flat" if ckpt.spec["name"] == "mlp" else "image"
    x, t = eval_share(path, args.split, comm.rank, comm.world_size, dtype=ckpt.dtype,
                      shape=shape, normalize=normalize)
    return net, path, x, t


def tally(net, x, t, batch_size=1000):
    """(counts[true, predicted] as int64, the SUM of per-sample losses): sums ranks can add."""
    k = int(net.spec.get("output_size", 10))
    counts, loss_sum = np.zeros(k * k, np.int64), 0.0
    for i in range(0, len(x), batch_size):
        y, tb = net.predict(x[i:i + batch_size]).astype(np.float64), t[i:i + batch_size]
        counts += np.bincount(tb * k + y.argmax(axis=1), minlength=k * k)
        loss_sum += softmax_loss(y, tb) * len(y)
    return counts.reshape(k, k), np.array([loss_sum])


def summarise(counts, loss_sum, checkpoint, data, split):
    n = int(counts.sum())
    per_class = counts.diagonal() / np.maximum(counts.sum(axis=1), 1)
    return {"checkpoint": str(checkpoint), "data": str(data), "split": split, "samples": n,
            "accuracy": float(counts.trace() / n) if n else 0.0,
            "loss": float(loss_sum / n) if n else 0.0,
            "per_class_accuracy": [round(float(a), 6) for a in per_class],
            "confusion_matrix": counts.tolist()}


def format_report(r):
    k = len(r["confusion_matrix"])
    correct = sum(r["confusion_matrix"][i][i] for i in range(k))
    lines = [f"checkpoint {r['checkpoint']}",
             f"data {r['data']} /{r['split']}: {r['samples']} samples on {r['ranks']} rank(s)",
             f"accuracy {r['accuracy']:.4f} ({correct}/{r['samples']})  loss {r['loss']:.4f}",
             "per-class accuracy:"]
    for label, (acc, row) in enumerate(zip(r["per_class_accuracy"], r["confusion_matrix"],
                                           strict=True)):
        lines.append(f"  {label}  {acc:.4f}  ({row[label]}/{sum(row)})")
    lines.append("confusion matrix (rows: true label, columns: predicted):")
    lines.append("     " + "".join(f"{j:>6}" for j in range(k)))
    for i, row in enumerate(r["confusion_matrix"]):
        lines.append(f"  {i:>2} " + "".join(f"{c:>6}" for c in row))
    return "\n".join(lines)
