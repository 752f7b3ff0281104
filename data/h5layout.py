"""The layout of the HDF5 file mpinet trains from, and the checks that a file has it.

    /train/images  uint8 (N, 28, 28)     /train/labels  uint8 (N,)
    /test/images   uint8 (M, 28, 28)     /test/labels   uint8 (M,)
    /val/...       (only when prepared with --val)

Root attributes: dataset, format_version, created, fingerprint (a hash of the arrays only, so
two preparations of the same data agree), pixel_mean and pixel_std of the train images scaled
to [0, 1] (for normalize="standard"), val_size, val_seed, and sha256_<file> of each source.
Nothing else: every attribute has a type and a range (ATTRIBUTES), the root holds only the
groups train, test and val, each only the datasets images and labels. Every way a file can
differ is a one-line ValueError naming it and saying how to prepare it again.
"""

import math
import re
from datetime import datetime

import h5py
import numpy as np

from . import sources

FORMAT_VERSION = 1
REQUIRED_SPLITS = ("train", "test")
OPTIONAL_SPLITS = ("val",)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
REQUIRED_ATTRS = ("dataset", "format_version", "created", "fingerprint", "pixel_mean", "pixel_std")
KINDS = ("images", "labels")
HEX64 = re.compile(r"[0-9a-f]{64}")


def _iso(text):
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _fraction(value):
    return math.isfinite(value) and 0 <= value <= 1


# name -> (the Python type h5py reads it as, what it must be, a range check)
ATTRIBUTES = {
    "dataset": (str, "mnist or fashion-mnist", lambda v: v in sources.SHA256),
    "format_version": (int, f"{FORMAT_VERSION}", lambda v: v == FORMAT_VERSION),
    "created": (str, "an ISO 8601 date and time", _iso),
    "fingerprint": (str, "64 lowercase hex digits (a sha256)", HEX64.fullmatch),
    "pixel_mean": (float, "a float in [0, 1]", _fraction),
    "pixel_std": (float, "a float in (0, 1]", lambda v: _fraction(v) and v > 0),
    "val_size": (int, "an integer >= 0", lambda v: v >= 0),
    "val_seed": (int, "an integer >= 0", lambda v: v >= 0),
    **{
        f"sha256_{key}": (str, "64 lowercase hex digits (a sha256)", HEX64.fullmatch)
        for key in sources.FILES
    },
}


def split_names(f):
    """The splits present in an open file, in a fixed order."""
    return [name for name in REQUIRED_SPLITS + OPTIONAL_SPLITS if name in f]


def check_layout(path, f):
    """Raise a one-line ValueError unless the open file `f` has the layout above."""
    where = f"data file {path}"
    attrs = {key: plain(value) for key, value in f.attrs.items()}
    if "format_version" not in attrs:
        raise ValueError(
            f"{where}: no format_version attribute; expected an mpinet data file; "
            f"create it with `mpinet prepare --out {path}`"
        )
    if attrs["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{where}: data format version {attrs['format_version']!r}; this "
            f"mpinet reads version {FORMAT_VERSION}; {redo_hint(path)}"
        )
    redo = redo_hint(path, attrs.get("dataset"))
    for key, value in attrs.items():
        check_attribute(where, key, value, redo)
    missing = [name for name in REQUIRED_ATTRS if name not in attrs]
    if missing:
        raise ValueError(
            f"{where}: root attribute {missing[0]} is missing; expected "
            f"{ATTRIBUTES[missing[0]][1]}; {redo}"
        )
    _check_members(where, f, redo)
    for name in split_names(f):
        _check_split(where, f, name, redo)
    val = len(f["val"]["labels"]) if "val" in f else 0
    if attrs.get("val_size", val) != val:
        raise ValueError(
            f"{where}: root attribute val_size is {attrs['val_size']}; expected "
            f"{val}, the size of /val; {redo}"
        )


def check_attribute(where, key, value, todo):
    """A one-line ValueError unless `key` is a known attribute and `value` fits it."""
    if key not in ATTRIBUTES:
        raise ValueError(
            f"{where}: root attribute {key} is unknown; expected only "
            f"{', '.join(ATTRIBUTES)}; {todo}"
        )
    kind, expected, valid = ATTRIBUTES[key]
    right_kind = isinstance(value, kind) and not isinstance(value, bool)
    if not right_kind or (kind is float and not math.isfinite(value)) or not valid(value):
        shown = repr(value) if right_kind else f"{type(value).__name__} {value!r}"
        raise ValueError(
            f"{where}: root attribute {key} is {shown[:70]}; expected {expected}; {todo}"
        )


def _check_members(where, f, redo):
    """Only the groups train, test (required) and val; in each only images and labels; no
    attributes but the root's."""
    for name, node in f.items():
        if name not in REQUIRED_SPLITS + OPTIONAL_SPLITS or not isinstance(node, h5py.Group):
            kind = "group" if isinstance(node, h5py.Group) else "dataset"
            raise ValueError(
                f"{where}: /{name} is an unknown {kind}; expected only the "
                f"groups /train, /test and /val; {redo}"
            )
    for name in REQUIRED_SPLITS:
        if name not in f:
            raise ValueError(f"{where}: no /{name} group; expected /train and /test; {redo}")
    for name in split_names(f):
        group = f[name]
        for member in group:
            if member not in KINDS:
                raise ValueError(
                    f"{where}: /{name}/{member} is unknown; expected only "
                    f"/{name}/images and /{name}/labels; {redo}"
                )
        for node in [group] + [group[kind] for kind in KINDS if kind in group]:
            extra = list(node.attrs)
            if extra:
                raise ValueError(
                    f"{where}: {node.name} attribute {extra[0]} is unknown; "
                    f"expected no attributes there; {redo}"
                )


def _check_split(where, f, name, redo):
    for kind in KINDS:
        node = f[name].get(kind)
        if not isinstance(node, h5py.Dataset):
            raise ValueError(f"{where}: no dataset /{name}/{kind}; expected uint8 {kind}; {redo}")
        if node.dtype != np.uint8:
            raise ValueError(
                f"{where}: /{name}/{kind} has dtype {node.dtype}; expected uint8; {redo}"
            )
    images, labels = f[name]["images"], f[name]["labels"]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{where}: /{name}/images has shape {images.shape}; expected (N, 28, 28); {redo}"
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{where}: /{name}/labels has shape {labels.shape}; expected "
            f"({images.shape[0]},) to match /{name}/images; {redo}"
        )
    if len(labels) and labels[:].max() >= NUM_CLASSES:  # 70 kB read: cheap
        raise ValueError(f"{where}: /{name}/labels holds {labels[:].max()}; expected 0..9; {redo}")


def redo_hint(path, dataset=None):
    """What to do about a bad data file: prepare it again (naming the data set if known)."""
    which = f"--dataset {dataset} " if dataset in sources.SHA256 and dataset != "mnist" else ""
    return f"rewrite it with `mpinet prepare {which}--force --out {path}`"


def plain(value):
    """An attribute as h5py reads it -> a plain Python value."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
