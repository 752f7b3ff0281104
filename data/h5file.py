"""The HDF5 file mpinet trains from: its layout, how it is written, how it is checked.

    /train/images  uint8 (N, 28, 28)     /train/labels  uint8 (N,)
    /test/images   uint8 (M, 28, 28)     /test/labels   uint8 (M,)
    /val/...       (only when prepared with --val)

Root attributes: dataset, format_version, created, fingerprint (a hash of the arrays only, so
two preparations of the same data agree), pixel_mean and pixel_std of the train images scaled
to [0, 1] (for normalize="standard"), val_size, val_seed, and sha256_<file> of each source.

Readers open the file read-only without HDF5 file locking: many MPI ranks read it at once,
often from network file systems that do not support locks, and a file is only ever replaced
whole (written under a temporary name, then renamed), never modified in place.
"""

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
REQUIRED_SPLITS = ("train", "test")
OPTIONAL_SPLITS = ("val",)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
# 1024 images = 784 KiB per chunk: fits HDF5's default 1 MiB chunk cache, and gzip level 4
# reads the whole MNIST train set back in about 0.2 s (docs/data.md has the measurement).
CHUNK_IMAGES = 1024
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4
REQUIRED_ATTRS = ("dataset", "format_version", "created", "fingerprint", "pixel_mean", "pixel_std")


def write(path, splits, attrs):
    """Write `splits` ({"train": (images, labels), ...}) and `attrs` to a new file at `path`."""
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
        raise FileNotFoundError(f"{path}: no such file; create it with `mpinet prepare`")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({_first_line(e)})") from None
    try:
        _check_layout(path, f)
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
                    f"{path}: content does not match its fingerprint (stored "
                    f"{attrs['fingerprint'][:12]}, found {found[:12]}): the file is corrupted"
                )
    return attrs


def fingerprint(path) -> str:
    """The content hash stored when the file was prepared (cheap: no array is read)."""
    with open_checked(path) as f:
        return str(f.attrs["fingerprint"])


def split_names(f):
    """The splits present in an open file, in a fixed order."""
    return [name for name in REQUIRED_SPLITS + OPTIONAL_SPLITS if name in f]


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


def _check_layout(path, f):
    missing = [name for name in REQUIRED_ATTRS if name not in f.attrs]
    if "format_version" in missing:
        raise ValueError(
            f"{path}: not an mpinet data file (no format_version attribute); "
            f"create it with `mpinet prepare`"
        )
    version = int(f.attrs["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: data format version {version}, this mpinet reads version "
            f"{FORMAT_VERSION}; rewrite it with `mpinet prepare --force`"
        )
    if missing:
        raise ValueError(f"{path}: missing root attributes {', '.join(missing)}")
    for name in REQUIRED_SPLITS:
        if name not in f:
            raise ValueError(f"{path}: no /{name} group; expected /train and /test")
    for name in split_names(f):
        _check_split(path, f, name)


def _check_split(path, f, name):
    for kind in ("images", "labels"):
        node = f[name].get(kind)
        if not isinstance(node, h5py.Dataset):
            raise ValueError(f"{path}: no dataset /{name}/{kind}")
        if node.dtype != np.uint8:
            raise ValueError(f"{path}: /{name}/{kind} has dtype {node.dtype}, expected uint8")
    images, labels = f[name]["images"], f[name]["labels"]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{path}: /{name}/images has shape {images.shape}, expected (N, 28, 28)")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{path}: /{name}/labels has shape {labels.shape}, expected "
            f"({images.shape[0]},) to match /{name}/images"
        )
    if len(labels) and labels[:].max() >= NUM_CLASSES:  # 70 kB read: cheap
        raise ValueError(f"{path}: /{name}/labels holds {labels[:].max()}, expected 0..9")


def _first_line(e):
    return " ".join(str(e).split()) or type(e).__name__
