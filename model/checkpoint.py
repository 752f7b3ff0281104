"""Checkpoint files: the whole training state in ONE HDF5 file, validated before use.

    /params/<name>      the trainable arrays by name, the book's shapes ("conv1.W" (FN, C, FH, FW))
    /state/<name>       arrays that are state but not trained (BatchNorm running mean/var)
    /optimizer/<key>    the optimizer's flat state arrays ("m", "v" for Adam); attributes:
                        name, iter and the hyper-parameters (lr, beta1, ...)
    root attributes     format_version, model_spec (JSON), dtype, created, the versions of
                        mpinet/numpy/h5py, and every key of the caller's `meta`
    every dataset       a `sha256` attribute: the hash of its bytes

Only numbers and strings: nothing is pickled, so `h5dump` reads every part and loading a
file from elsewhere cannot run code. A file is written under a temporary name, fsynced and
renamed, so a crash leaves either the old file or the new one, never half of one.
`read` checks everything (checksums, names, shapes, dtypes, finiteness) before returning.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np

from .networks import build
from .optimizers import OPTIMIZERS, create

FORMAT_VERSION = 1
# Root attributes that save() writes itself; `meta` may not use these names.
RESERVED = ("format_version", "model_spec", "dtype", "created", "mpinet_version",
            "numpy_version", "h5py_version")
HYPERPARAMETERS = ("lr", "momentum", "decay_rate", "beta1", "beta2", "eps")
CORRUPT = "the file is corrupt; use an earlier checkpoint"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, already validated by read()."""

    path: Path
    spec: dict  # the resolved model spec: build(spec, dtype) makes the same network
    dtype: str
    params: dict  # name -> array, the book's shapes
    state: dict  # name -> array (BatchNorm running statistics)
    optimizer: dict | None  # {"name", "hyperparameters", "iter", <array key>: array or None}
    meta: dict  # the caller's flat meta (step, epoch, config, RNG states, ...) and versions

    def layout(self):
        """(name, shape, dtype string) per parameter, as ParamBuffer.layout() gives it."""
        dtype = np.dtype(self.dtype).str
        return tuple((name, a.shape, dtype) for name, a in self.params.items())


# -- writing ------------------------------------------------------------------------------


def save(path, net, optimizer=None, meta=None):
    """Write `net` (and `optimizer`, `meta`) to `path` atomically; return the path.

    meta: a flat dict of str -> str, int, float or bool (step, epoch, config text, ...).
    """
    path = Path(path)
    meta = _check_meta(dict(meta or {}))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            _write(f, net, optimizer, meta)
        fsync(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)  # the rename itself survives a power cut
    return path


def _write(f, net, optimizer, meta):
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["model_spec"] = json.dumps(net.spec, sort_keys=True)
    f.attrs["dtype"] = str(net.dtype)
    f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    for name in ("mpinet", "numpy", "h5py"):
        f.attrs[f"{name}_version"] = _version(name)
    for key, value in meta.items():
        f.attrs[key] = value
    _write_arrays(f.create_group("params"), net.buffer.params)
    _write_arrays(f.create_group("state"), net.state.params)
    if optimizer is not None:
        group = f.create_group("optimizer")
        group.attrs["name"] = optimizer_name(optimizer)
        for key in HYPERPARAMETERS:
            if hasattr(optimizer, key):
                group.attrs[key] = float(getattr(optimizer, key))
        state = optimizer.state_dict()
        group.attrs["iter"] = int(state.pop("iter"))
        _write_arrays(group, {k: v for k, v in state.items() if v is not None})


def _write_arrays(group, arrays):
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dataset = group.create_dataset(name, data=array)  # contiguous: plain bytes on disk
        dataset.attrs["sha256"] = _sha256(array)


def _check_meta(meta):
    for key, value in meta.items():
        if key in RESERVED:
            raise ValueError(f"checkpoint meta: key {key!r} is reserved; rename it")
        if not isinstance(value, str | int | float | bool | np.integer | np.floating):
            raise ValueError(f"checkpoint meta: {key}={value!r} is a {type(value).__name__}; "
                             f"expected str, int, float or bool (JSON text for the rest)")
    return meta


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


def _sha256(array):
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


# -- reading ------------------------------------------------------------------------------


def read(path):
    """Read and validate a checkpoint file -> Checkpoint; a CheckpointError otherwise."""
    return _read(Path(path))[0]


def load(path):
    """A network with the checkpoint's weights, ready for predict(x) / predict_proba(x)."""
    ckpt, net = _read(Path(path))
    restore(ckpt, net)
    return net


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
        differ = sorted(k for k in set(net.spec) | set(ckpt.spec)
                        if net.spec.get(k) != ckpt.spec.get(k))
        raise CheckpointError(f"{where}: its model spec differs from this network's in "
                              f"{', '.join(differ) or 'key order'}; use the same [model] config")
    if net.buffer.layout() != ckpt.layout() or set(net.state.params) != set(ckpt.state):
        raise CheckpointError(f"{where}: its parameter layout differs from this network's "
                              f"({len(ckpt.params)} vs {len(net.params)} tensors, "
                              f"{ckpt.dtype} vs {net.dtype}); use the same [model] config")
    for name, array in ckpt.params.items():
        net.buffer.params[name][...] = array  # in place: the views stay in the flat buffer
    for name, array in ckpt.state.items():
        net.state.params[name][...] = array
    if optimizer is not None:
        if ckpt.optimizer is None:
            raise CheckpointError(f"{where}: holds no optimizer state; it cannot resume training")
        if ckpt.optimizer["name"] != optimizer_name(optimizer):
            raise CheckpointError(f"{where}: holds {ckpt.optimizer['name']} state, the optimizer "
                                  f"is {optimizer_name(optimizer)}; use the same optim.name")
        optimizer.load_state_dict(ckpt.optimizer)


def _read(path):
    """(Checkpoint, a network built from its spec): the network is the layout to check."""
    where = f"checkpoint {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise CheckpointError(f"{where}: not a readable HDF5 file ({_first_line(e)}): "
                              f"truncated, damaged or not a checkpoint; use another") from None
    try:
        with f:
            return _read_open(f, where, path)
    except (OSError, KeyError, TypeError) as e:  # h5py's errors when a damaged part is read
        raise CheckpointError(f"{where}: unreadable ({_first_line(e)}); {CORRUPT}") from None


def _read_open(f, where, path):
    attrs = {key: _plain(value) for key, value in f.attrs.items()}
    if "format_version" not in attrs:
        raise CheckpointError(f"{where}: not an mpinet checkpoint (no format_version attribute)")
    if attrs["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {attrs['format_version']}, this mpinet "
                              f"reads version {FORMAT_VERSION}; use a matching mpinet version")
    spec, dtype, net = _build(attrs, where)
    params = _read_group(f, "params", net.buffer.specs, dtype, where)
    state = _read_group(f, "state", net.state.specs, dtype, where)
    optimizer = _read_optimizer(f, net.buffer.size, dtype, where)
    meta = {k: v for k, v in attrs.items() if k not in ("format_version", "model_spec", "dtype")}
    return Checkpoint(path, spec, dtype, params, state, optimizer, meta), net


def _build(attrs, where):
    """The spec and dtype of the file, and the network they build (or a one-line error)."""
    try:
        spec = json.loads(attrs["model_spec"])
        dtype = str(np.dtype(attrs["dtype"]))
        net = build(spec, dtype=dtype)
    except KeyError as e:
        raise CheckpointError(f"{where}: missing root attribute {e}; {CORRUPT}") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: model spec or dtype unusable ({_first_line(e)})") from None
    return spec, dtype, net


def _read_group(f, group_name, specs, dtype, where):
    """The arrays of /params or /state, checked against the (name, shape) specs."""
    group = f.get(group_name)
    if not isinstance(group, h5py.Group):
        raise CheckpointError(f"{where}: no /{group_name} group; {CORRUPT}")
    expected = dict(specs)
    extra = sorted(set(group) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: /{group_name}/{extra[0]} is not in the model spec's "
                              f"layout; the file does not match its model_spec")
    arrays = {}
    for name, shape in specs:
        arrays[name] = _read_array(group, name, shape, dtype, f"{where}: /{group_name}/{name}")
    return arrays


def _read_array(group, name, shape, dtype, what):
    dataset = group.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise CheckpointError(f"{what} is missing; {CORRUPT}")
    if dataset.dtype != np.dtype(dtype) or dataset.shape != tuple(shape):
        raise CheckpointError(f"{what} has {dataset.dtype} {dataset.shape}, the model spec "
                              f"needs {np.dtype(dtype)} {tuple(shape)}")
    array = dataset[()]
    if "sha256" not in dataset.attrs:
        raise CheckpointError(f"{what} has no sha256 attribute; {CORRUPT}")
    if _sha256(array) != _plain(dataset.attrs["sha256"]):
        raise CheckpointError(f"{what} checksum mismatch (file corrupt); use an earlier checkpoint")
    if not np.all(np.isfinite(array)):
        raise CheckpointError(f"{what} holds NaN or Inf (training diverged before this save); "
                              f"use an earlier checkpoint")
    return array


def _read_optimizer(f, size, dtype, where):
    """{"name", "hyperparameters", "iter", <key>: array or None}, or None when not saved."""
    group = f.get("optimizer")
    if group is None:
        return None
    attrs = {key: _plain(value) for key, value in group.attrs.items()}
    name = attrs.get("name")
    if name not in OPTIMIZERS or not isinstance(attrs.get("iter"), int):
        raise CheckpointError(f"{where}: /optimizer has name {name!r} and iter "
                              f"{attrs.get('iter')!r}; expected one of {sorted(OPTIMIZERS)} "
                              f"and an integer")
    keys = [k for k in create(name).state_dict() if k != "iter"]
    extra = sorted(set(group) - set(keys))
    if extra:
        raise CheckpointError(f"{where}: /optimizer/{extra[0]} is not part of {name}'s state")
    state = {"name": name, "iter": attrs["iter"],
             "hyperparameters": {k: attrs[k] for k in HYPERPARAMETERS if k in attrs}}
    for key in keys:
        what = f"{where}: /optimizer/{key}"
        # Arrays are made on the first update: before it, none of them exists.
        if key not in group and attrs["iter"] == 0:
            state[key] = None
        else:
            state[key] = _read_array(group, key, (size,), dtype, what)
    return state


def _plain(value):
    """An attribute as a plain Python value: str, int, float or bool."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _canonical(spec):
    return json.dumps(spec, sort_keys=True)  # tuples and lists compare alike after JSON


def _first_line(e):
    return " ".join(str(e).split()) or type(e).__name__


# -- random number generators -------------------------------------------------------------


def rng_state(rng):
    """A NumPy Generator's state as JSON text (for meta): the stream continues after restore."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng, text):
    """Put the state from rng_state() back into `rng` (in place: holders keep the object)."""
    rng.bit_generator.state = json.loads(text)
