"""Reading ONE checkpoint file: every part is checked before anything is returned.

In this order: the file is HDF5; format_version is one this mpinet reads; every root
attribute is known and fits its rule (schema.py); the file holds only /params, /state and
/optimizer, only datasets in them, only a sha256 attribute on each; the /optimizer
attributes fit; meta_sha256 matches the metadata (format 2); the spec builds
a network; every array that network has is present, nothing else is, with its dtype and
shape; each array's sha256 matches; every value is finite. Each failure is one line naming
the file and the member, raised as CheckpointError.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mpinet.data.messages import one_line

from ..builders import build
from ..optimizers import create
from ..weights16 import STORED, from_stored
from .rules import plain
from .schema import (
    CORRUPT,
    DATASET,
    GROUPS,
    HYPERPARAMETERS,
    OPTIMIZER,
    READABLE_VERSIONS,
    ROOT,
    CheckpointError,
    check_attributes,
    meta_digest,
    required_root,
    sha256,
)


@dataclass
class Checkpoint:
    """What a checkpoint file holds, already validated by read()."""

    path: Path
    spec: dict  # the resolved model spec: build(spec, dtype) makes the same network
    dtype: str
    params: dict  # name -> array, the book's shapes
    state: dict  # name -> array (BatchNorm running statistics)
    optimizer: dict | None  # {"name", "hyperparameters", "iter", <array key>: array or None}
    meta: dict  # the caller's meta (step, epoch, config, RNG states, ...) and versions

    def layout(self):
        """(name, shape, dtype string) per parameter, as ParamBuffer.layout() gives it."""
        dtype = np.dtype(self.dtype).str
        return tuple((name, a.shape, dtype) for name, a in self.params.items())


def read_file(path):
    """(Checkpoint, a network built from its spec) of the file `path`, or CheckpointError."""
    where = f"checkpoint {path}"
    if not path.is_file():
        raise CheckpointError(
            f"{where}: no such file; expected a checkpoint file, a run "
            f"directory or its checkpoints/latest; check the path"
        )
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise CheckpointError(
            f"{where}: not a readable HDF5 file ({one_line(e)}); expected "
            f"a checkpoint; it is truncated or damaged, use another"
        ) from None
    try:
        with f:
            return _read_open(f, where, path)
    except (OSError, KeyError, TypeError) as e:  # h5py's errors when a damaged part is read
        raise CheckpointError(f"{where}: unreadable ({one_line(e)}); {CORRUPT}") from None


def _read_open(f, where, path):
    attrs = {key: plain(value) for key, value in f.attrs.items()}
    version = _check_version(attrs, where)
    rules = ROOT if version >= 2 else {k: v for k, v in ROOT.items() if k != "meta_sha256"}
    check_attributes(where, "/", attrs, rules, required_root(version))
    _check_tree(f, where)
    if version >= 2 and meta_digest(f) != attrs["meta_sha256"]:
        raise CheckpointError(
            f"{where}: attribute meta_sha256 does not match the root and "
            f"/optimizer attributes; expected them as saved (one was changed "
            f"since); {CORRUPT}"
        )
    spec, dtype, net = _build(attrs, where)
    weights = attrs.get("weights")  # 16-bit arrays: read back into `dtype`
    params = _read_group(f, "params", net.buffer.specs, dtype, where, weights)
    state = _read_group(f, "state", net.state.specs, dtype, where, weights)
    if weights is not None and "optimizer" in f:
        raise CheckpointError(
            f"{where}: /optimizer in a {weights} checkpoint; expected none "
            f"(16-bit checkpoints are for inference); {CORRUPT}"
        )
    optimizer = _read_optimizer(f, net.buffer.size, dtype, where)
    meta = {
        k: v
        for k, v in attrs.items()
        if k not in ("format_version", "model_spec", "dtype", "meta_sha256", "weights")
    }
    return Checkpoint(path, spec, dtype, params, state, optimizer, meta), net


def _check_version(attrs, where):
    if "format_version" not in attrs:
        raise CheckpointError(
            f"{where}: no format_version attribute; expected an mpinet "
            f"checkpoint; pass a file that `mpinet train` wrote"
        )
    version = attrs["format_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise CheckpointError(
            f"{where}: format version {version!r}; this mpinet reads "
            f"versions {' and '.join(map(str, READABLE_VERSIONS))}; use a "
            f"matching mpinet version"
        )
    return version


def _check_tree(f, where):
    """Only the known groups, only datasets in them, only known attributes anywhere."""
    for name, node in f.items():
        if name not in GROUPS or not isinstance(node, h5py.Group):
            raise CheckpointError(
                f"{where}: /{name} is an unknown {node_kind(node)}; expected "
                f"only the groups /params, /state and /optimizer; the file "
                f"was not written by mpinet or was edited, use another"
            )
    for group_name in GROUPS:
        group = f.get(group_name)
        if group is None:
            continue
        if group_name == "optimizer":
            _check_optimizer_attributes(group, where)
        else:
            check_attributes(where, f"/{group_name}", dict(group.attrs), {})
        for name, node in group.items():
            member = f"/{group_name}/{name}"
            if not isinstance(node, h5py.Dataset):
                raise CheckpointError(
                    f"{where}: {member} is a group; expected only datasets "
                    f"in /{group_name}; {CORRUPT}"
                )
            check_attributes(
                where,
                member,
                {k: plain(v) for k, v in node.attrs.items()},
                DATASET,
                required=("sha256",),
            )


def _build(attrs, where):
    """The spec and dtype of the file, and the network they build (or a one-line error)."""
    spec, dtype = json.loads(attrs["model_spec"]), attrs["dtype"]
    try:
        net = build(spec, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise CheckpointError(
            f"{where}: attribute model_spec is not a spec this mpinet builds "
            f"({one_line(e)}); expected one of its model specs; use a "
            f"matching mpinet version"
        ) from None
    return spec, dtype, net


def _read_group(f, group_name, specs, dtype, where, weights=None):
    """The arrays of /params or /state, checked against the (name, shape) specs."""
    group = f.get(group_name)
    if group is None:
        raise CheckpointError(
            f"{where}: /{group_name} is missing; expected a group of arrays; {CORRUPT}"
        )
    expected = dict(specs)
    extra = sorted(set(group) - set(expected))
    if extra:
        raise CheckpointError(
            f"{where}: /{group_name}/{extra[0]} is not in the layout of its "
            f"model_spec; expected only {', '.join(expected) or 'no arrays'}; "
            f"{CORRUPT}"
        )
    arrays = {}
    for name, shape in specs:
        arrays[name] = _read_array(
            group, name, shape, dtype, f"{where}: /{group_name}/{name}", weights
        )
    return arrays


def _read_array(group, name, shape, dtype, what, weights=None):
    stored = np.dtype(dtype) if weights is None else STORED[weights]
    dataset = group.get(name)
    if dataset is None:
        raise CheckpointError(
            f"{what} is missing; expected a {stored} array of shape {tuple(shape)}; {CORRUPT}"
        )
    if dataset.dtype != stored or dataset.shape != tuple(shape):
        raise CheckpointError(
            f"{what} has {dataset.dtype} {dataset.shape}; the model spec "
            f"needs {stored} {tuple(shape)}; {CORRUPT}"
        )
    array = dataset[()]
    if sha256(array) != plain(dataset.attrs["sha256"]):
        raise CheckpointError(
            f"{what} does not match its sha256 attribute; expected the bytes "
            f"that were saved; {CORRUPT}"
        )
    if weights is not None:
        array = from_stored(array, weights, dtype)
    if not np.all(np.isfinite(array)):
        raise CheckpointError(
            f"{what} holds NaN or Inf; expected finite numbers (training "
            f"diverged before this save); use an earlier checkpoint"
        )
    return array


def _check_optimizer_attributes(group, where):
    """name, iter and exactly the hyper-parameters of that optimizer, in its ranges."""
    attrs = {key: plain(value) for key, value in group.attrs.items()}
    check_attributes(where, "/optimizer", attrs, OPTIMIZER, required=("name", "iter"))
    name = attrs["name"]
    needed = [k for k in HYPERPARAMETERS if hasattr(create(name), k)]
    hyper = hyperparameters(attrs)
    if sorted(hyper) != sorted(needed):
        raise CheckpointError(
            f"{where}: /optimizer attributes {', '.join(hyper) or 'none'} "
            f"are the hyper-parameters; expected those of {name}: "
            f"{', '.join(needed) or 'none'}; {CORRUPT}"
        )
    try:
        create(name, **hyper)  # its own range checks (lr > 0, momentum in [0, 1), ...)
    except ValueError as e:
        raise CheckpointError(
            f"{where}: /optimizer hyper-parameters refused ({one_line(e)}); "
            f"expected values {name} accepts; {CORRUPT}"
        ) from None


def hyperparameters(attrs):
    return {k: attrs[k] for k in HYPERPARAMETERS if k in attrs}


def _read_optimizer(f, size, dtype, where):
    """{"name", "hyperparameters", "iter", <key>: array or None}, or None when not saved.
    Its attributes were checked with the rest (_check_tree)."""
    group = f.get("optimizer")
    if group is None:
        return None
    attrs = {key: plain(value) for key, value in group.attrs.items()}
    name = attrs["name"]
    keys = [k for k in create(name).state_dict() if k != "iter"]
    extra = sorted(set(group) - set(keys))
    if extra:
        raise CheckpointError(
            f"{where}: /optimizer/{extra[0]} is not part of {name}'s state; "
            f"expected only {', '.join(keys) or 'no arrays'}; {CORRUPT}"
        )
    state = {"name": name, "iter": attrs["iter"], "hyperparameters": hyperparameters(attrs)}
    for key in keys:
        # Arrays are made on the first update: before it, none of them exists.
        if key not in group and attrs["iter"] == 0:
            state[key] = None
        else:
            state[key] = _read_array(group, key, (size,), dtype, f"{where}: /optimizer/{key}")
    return state


def node_kind(node):
    return "group" if isinstance(node, h5py.Group) else "dataset"
