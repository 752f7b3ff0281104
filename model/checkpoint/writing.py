"""Writing a checkpoint file: the layout of schema.py, atomically.

Only numbers and strings: nothing is pickled, so `h5dump` reads every part and loading a
file from elsewhere cannot run code. A file is written under a temporary name, fsynced and
renamed by mpinet.data.atomic (the project's one atomic writer; data/ is the package every
other may import), so a crash leaves either the old file or the new one, never half of one.
"""

import json
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np

from mpinet.data.atomic import replacing

from ..optimizers import OPTIMIZERS
from ..weights16 import STORED, to_stored
from .schema import FORMAT_VERSION, HYPERPARAMETERS, check_meta, meta_digest, sha256


def save(path, net, optimizer=None, meta=None, weights=None):
    """Write `net` (and `optimizer`, `meta`) to `path` atomically; return the path.

    meta: the keys of META (schema.py), "step" required, e.g.
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
    with replacing(path) as tmp:  # the one atomic writer (temp, fsync, rename, fsync dir)
        with h5py.File(tmp, "w", locking=False) as f:
            _write(f, net, optimizer, meta, weights)
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


def _version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
