"""Checkpoint files: the whole training state in ONE HDF5 file, validated before use.

    /params/<name>      the trainable arrays by name, the book's shapes ("conv1.W" (FN, C, FH, FW))
    /state/<name>       arrays that are state but not trained (BatchNorm running mean/var)
    /optimizer/<key>    the optimizer's flat state arrays ("m", "v" for Adam); attributes:
                        name, iter and the hyper-parameters (lr, beta1, ...)
    root attributes     format_version, model_spec (JSON), dtype, created, the versions of
                        mpinet/numpy/h5py, every key of the caller's `meta`, meta_sha256
    every dataset       a `sha256` attribute: the hash of its bytes

Only numbers and strings: nothing is pickled, so `h5dump` reads every part and loading a
file from elsewhere cannot run code. A file is written under a temporary name, fsynced and
renamed, so a crash leaves either the old file or the new one, never half of one.
Every attribute has a rule (checkpoint_schema.py), `read` checks the whole file against it
and the arrays against the spec (checkpoint_read.py) before returning, and every function
that takes a path also takes a run directory or a `latest` pointer (checkpoint_paths.py).
"""

import json
import os
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np

from .checkpoint_paths import NAME, checkpoint_files, locate, read_pointer, resolve
from .checkpoint_read import Checkpoint, read_file, sha256
from .checkpoint_schema import (
    FORMAT_VERSION,
    HYPERPARAMETERS,
    META,
    CheckpointError,
    check_meta,
    meta_digest,
)
from .networks import build
from .optimizers import OPTIMIZERS
from .weights16 import STORED, to_stored

__all__ = [
    "FORMAT_VERSION",
    "META",
    "NAME",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_files",
    "fsync",
    "load",
    "locate",
    "network",
    "optimizer_name",
    "read",
    "read_pointer",
    "resolve",
    "restore",
    "rng_state",
    "save",
    "set_rng_state",
]


# -- writing ------------------------------------------------------------------------------


def save(path, net, optimizer=None, meta=None, weights=None):
    """Write `net` (and `optimizer`, `meta`) to `path` atomically; return the path.

    meta: the keys of META (checkpoint_schema.py), "step" required, e.g.
    {"step": 600, "config": toml_text}; anything else is refused before writing.
    weights: None, or "float16"/"bfloat16" for an inference-only file of 16-bit arrays.
    """
    path = Path(path)
    meta = check_meta(dict(meta or {}))
    if weights is not None and (weights not in STORED or optimizer is not None):
        raise ValueError(
            f"checkpoint {path}: weights={weights!r} with an optimizer "
            f"{optimizer is not None}; expected float16 or bfloat16 and no "
            f"optimizer (16-bit checkpoints are for inference)"
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            _write(f, net, optimizer, meta, weights)
        fsync(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)  # the rename itself survives a power cut
    return path


def _write(f, net, optimizer, meta, weights=None):
    f.attrs["format_version"] = FORMAT_VERSION
    if weights is not None:
        f.attrs["weights"] = weights
    f.attrs["model_spec"] = json.dumps(net.spec, sort_keys=True)
    f.attrs["dtype"] = str(net.dtype)
    f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    for name in ("mpinet", "numpy", "h5py"):
        f.attrs[f"{name}_version"] = _version(name)
    for key, value in meta.items():
        f.attrs[key] = value
    _write_arrays(f.create_group("params"), net.buffer.params, weights)
    _write_arrays(f.create_group("state"), net.state.params, weights)
    if optimizer is not None:
        group = f.create_group("optimizer")
        group.attrs["name"] = optimizer_name(optimizer)
        for key in HYPERPARAMETERS:
            if hasattr(optimizer, key):
                group.attrs[key] = float(getattr(optimizer, key))
        state = optimizer.state_dict()
        group.attrs["iter"] = int(state.pop("iter"))
        _write_arrays(group, {k: v for k, v in state.items() if v is not None})
    # Last: the digest covers every attribute written above, read back as a reader sees it.
    f.attrs["meta_sha256"] = meta_digest(f)


def _write_arrays(group, arrays, weights=None):
    for name, array in arrays.items():
        array = np.ascontiguousarray(array if weights is None else to_stored(array, weights))
        dataset = group.create_dataset(name, data=array)  # contiguous: plain bytes on disk
        dataset.attrs["sha256"] = sha256(array)


def optimizer_name(optimizer):
    """'adam' for an Adam instance: the name create() takes."""
    for name, cls in OPTIMIZERS.items():
        if type(optimizer) is cls:
            return name
    raise ValueError(f"cannot checkpoint an optimizer of type {type(optimizer).__name__}")


def fsync(path):
    """Flush a file, or a directory's entries (a rename, an unlink), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise  # some file systems refuse fsync on a directory: the rename stays atomic
    finally:
        os.close(fd)


def _version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# -- reading ------------------------------------------------------------------------------


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


# -- random number generators -------------------------------------------------------------


def rng_state(rng):
    """A NumPy Generator's state as JSON text (for meta): the stream continues after restore."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng, state):
    """Put a state back into `rng` (in place: holders keep the object): rng_state()'s JSON
    text, or the state object itself (an element of meta["dropout_rngs"])."""
    rng.bit_generator.state = json.loads(state) if isinstance(state, str) else state
