"""From a path to a validated Checkpoint, or to a network with its weights in.

read(path) and load(path) take what paths.py resolves (a file, a `latest`/`best` pointer,
a run directory); restore() copies a Checkpoint into an existing network and optimizer,
in place, after checking that they are the ones it was saved from.
"""

import json

from ..builders import build
from .paths import locate
from .reading import read_file
from .schema import CheckpointError
from .writing import optimizer_name


def read(path, skipped=None):
    """Read and validate a checkpoint -> Checkpoint (its .path: the file chosen).

    `path`: a checkpoint file, a `latest`/`best` pointer, or a run directory (or its
    checkpoints/) for the newest valid checkpoint; `skipped(error)` hears about each
    invalid one passed over. Anything unusable is a one-line CheckpointError.
    """
    return _read(path, skipped)[0]


def load(path, skipped=None):
    """A network with the checkpoint's weights, ready for predict(x) / predict_proba(x).

    `path` as read() takes it: a file, a pointer or a run directory.
    """
    ckpt, net = _read(path, skipped)
    restore(ckpt, net)
    return net


def _read(path, skipped):
    chosen, ckpt = locate(path, skipped)
    if ckpt is not None:  # a directory's newest valid checkpoint: validated on the way
        return ckpt, build(ckpt.spec, dtype=ckpt.dtype)
    return read_file(chosen)


def network(ckpt):
    """A network built from a Checkpoint (read() already validated it), weights copied in."""
    net = build(ckpt.spec, dtype=ckpt.dtype)
    restore(ckpt, net)
    return net


def restore(ckpt, net, optimizer=None):
    """Copy a checkpoint into an existing network (in place) and optimizer.

    The network must have been built from the same spec and dtype; the optimizer, if given,
    must be of the kind that was saved.
    """
    where = f"checkpoint {ckpt.path}"
    if _canonical(net.spec) != _canonical(ckpt.spec):
        differ = sorted(
            k for k in set(net.spec) | set(ckpt.spec) if net.spec.get(k) != ckpt.spec.get(k)
        )
        raise CheckpointError(
            f"{where}: its model spec differs from this network's in "
            f"{', '.join(differ) or 'key order'}; use the same [model] config"
        )
    if net.buffer.layout() != ckpt.layout() or set(net.state.params) != set(ckpt.state):
        raise CheckpointError(
            f"{where}: its parameter layout differs from this network's "
            f"({len(ckpt.params)} vs {len(net.params)} tensors, "
            f"{ckpt.dtype} vs {net.dtype}); use the same [model] config"
        )
    for name, array in ckpt.params.items():
        net.buffer.params[name][...] = array  # in place: the views stay in the flat buffer
    for name, array in ckpt.state.items():
        net.state.params[name][...] = array
    if optimizer is not None:
        if ckpt.optimizer is None:
            raise CheckpointError(
                f"{where}: holds no optimizer state; expected one to resume "
                f"training; pass a checkpoint that `mpinet train` wrote"
            )
        if ckpt.optimizer["name"] != optimizer_name(optimizer):
            raise CheckpointError(
                f"{where}: holds {ckpt.optimizer['name']} state, the optimizer "
                f"is {optimizer_name(optimizer)}; use the same optim.name"
            )
        optimizer.load_state_dict(ckpt.optimizer)


def _canonical(spec):
    return json.dumps(spec, sort_keys=True)  # tuples and lists compare alike after JSON
