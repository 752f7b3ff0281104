"""The HDF5 file mpinet trains from: how it is written, opened and fingerprinted.

Its layout (groups, datasets, attributes) and the checks of it are in h5layout.py; write()
refuses what open_checked() would refuse, so every file `mpinet prepare` writes validates.

Readers open the file read-only without HDF5 file locking: many MPI ranks read it at once,
often from network file systems that do not support locks, and a file is only ever replaced
whole (written under a temporary name, then renamed: atomic.py), never modified in place.
"""

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .h5layout import (
    FORMAT_VERSION,
    OPTIONAL_SPLITS,
    REQUIRED_SPLITS,
    check_attribute,
    check_layout,
    plain,
    redo_hint,
    split_names,
)
from .messages import one_line

__all__ = [
    "FORMAT_VERSION",
    "content_fingerprint",
    "fingerprint",
    "open_checked",
    "pixel_stats",
    "split_names",
    "validate",
    "write",
]

# 1024 images = 784 KiB per chunk: fits HDF5's default 1 MiB chunk cache, and gzip level 4
# reads the whole MNIST train set back in about 0.2 s (docs/data.md has the measurement).
CHUNK_IMAGES = 1024
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4


def write(path, splits, attrs):
    """Write `splits` ({"train": (images, labels), ...}) and `attrs` to a new file at `path`.

    attrs: dataset, val_size, val_seed, sha256_<file> (ATTRIBUTES); the rest is computed.
    """
    unknown = sorted(set(splits) - set(REQUIRED_SPLITS + OPTIONAL_SPLITS))
    if unknown:
        raise ValueError(
            f"data file {path}: split {unknown[0]} is unknown; expected "
            f"train, test and val; leave it out"
        )
    for key, value in attrs.items():
        check_attribute(f"data file {path}", key, plain(value), "pass a value that fits")
    with h5py.File(path, "w") as f:
        for name, (images, labels) in splits.items():
            group = f.create_group(name)
            _create(group, "images", images)
            _create(group, "labels", labels)
        mean, std = pixel_stats(splits["train"][0])
        f.attrs.update(attrs)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        f.attrs["fingerprint"] = content_fingerprint(splits)
        f.attrs["pixel_mean"] = mean
        f.attrs["pixel_std"] = std


def _create(group, name, array):
    chunks = (min(CHUNK_IMAGES, max(len(array), 1)),) + array.shape[1:]
    # fletcher32 adds a checksum per chunk: a corrupted file fails loudly when read.
    group.create_dataset(
        name,
        data=array,
        chunks=chunks,
        compression=COMPRESSION,
        compression_opts=COMPRESSION_LEVEL,
        fletcher32=True,
    )


def open_checked(path):
    """Open `path` read-only and check its layout; the caller closes the returned h5py.File."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path}: no such file; expected an HDF5 file made "
            f"by `mpinet prepare`; create it with `mpinet prepare --out "
            f"{path}`"
        )
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise ValueError(
            f"data file {path}: not a readable HDF5 file ({one_line(e)}); "
            f"expected a file made by `mpinet prepare`; {redo_hint(path)}"
        ) from None
    try:
        check_layout(path, f)
    except BaseException:
        f.close()
        raise
    return f


def validate(path, deep=False):
    """Check the file's layout (and, with deep=True, its content); return its root attributes.

    deep=True reads every array and compares their hash with the stored fingerprint.
    """
    with open_checked(path) as f:
        attrs = dict(f.attrs)
        if deep:
            found = content_fingerprint(_read_splits(f))
            if found != attrs["fingerprint"]:
                raise ValueError(
                    f"data file {path}: content does not match its fingerprint (stored "
                    f"{attrs['fingerprint'][:12]}, found {found[:12]}); expected the arrays "
                    f"as prepared; the file is corrupted, {redo_hint(path, attrs['dataset'])}"
                )
    return attrs


def fingerprint(path) -> str:
    """The content hash stored when the file was prepared (cheap: no array is read)."""
    with open_checked(path) as f:
        return str(f.attrs["fingerprint"])


def content_fingerprint(splits) -> str:
    """sha256 over the split names, shapes and bytes: independent of compression and chunking."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for kind, array in zip(("images", "labels"), splits[name], strict=True):
            array = np.ascontiguousarray(array)
            h.update(f"{name}/{kind}:{array.dtype.str}:{array.shape}\n".encode())
            h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def pixel_stats(images):
    """Mean and standard deviation of the pixels scaled to [0, 1], exactly, via a histogram."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = counts @ values / counts.sum()
    std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
    return float(mean), float(std)


def _read_splits(f):
    return {name: (f[name]["images"][:], f[name]["labels"][:]) for name in split_names(f)}
