"""`mpinet prepare`: the four IDX .gz files of a data set -> one checked HDF5 file.

    mpinet prepare [--dataset mnist|fashion-mnist] [--source DIR|URL] [--out FILE.h5]
                   [--force] [--val N]

The file is written under a temporary name in the target directory, fsynced and renamed when
complete (data/atomic.py), so an interrupted run (an error, Ctrl-C) never leaves a
half-written file under the real name.
Running it again keeps a valid existing file; --force rewrites it.
"""

from pathlib import Path

import numpy as np

from .atomic import replacing
from .h5file import open_checked, split_names, validate, write
from .idx import check_pair, read_idx
from .sources import (
    DATASETS,
    ENV_SOURCE,
    SHA256,
    check_dataset,
    fetch,
    user_cache_dir,
)

HELP = "convert MNIST or Fashion-MNIST (downloaded and verified if needed) to one HDF5 file"
# The validation hold-out is a fixed-seed random choice of train images, so every --val N
# run picks the same images, on any machine; both parts keep the canonical order.
VAL_SEED = 0


def default_out(dataset="mnist") -> Path:
    """$XDG_CACHE_HOME/mpinet/<dataset>.h5 (by default ~/.cache/mpinet/<dataset>.h5)."""
    return user_cache_dir() / f"{dataset}.h5"


def prepare(dataset="mnist", source=None, out=None, force=False, val=0) -> Path:
    """Write the HDF5 file of `dataset` to `out` (unless a valid one is there) and return it."""
    return _prepare(dataset, source, out, force, val)[0]


def ensure_prepared(path=None, dataset="mnist", source=None):
    """The data file to train on -> (path, how it came: "existing" or "prepared from <dir>").

    Only the default cache file (path None or default_out(dataset)) is prepared when it is
    missing: an explicit path that does not exist is an error, never a new file (a typo in
    --data must not quietly prepare MNIST under the wrong name). Either way the file must
    hold `dataset`.
    """
    default = default_out(dataset)
    path = Path(path) if path else default
    if not path.exists():
        if path != default:
            raise FileNotFoundError(
                f"data file {path}: no such file; expected an HDF5 file made by `mpinet "
                f"prepare`; run `mpinet prepare --dataset {dataset} --out {path}`, or leave "
                f"data.path unset to use the cache ({default})"
            )
        path, _, where = _prepare(dataset, source, path, False, 0)
        return path, f"prepared from {where}"
    found = str(validate(path)["dataset"])
    if found != dataset:
        raise ValueError(
            f"data file {path}: holds {found}; expected {dataset} (data.dataset); "
            f"set data.dataset={found}, or pass a {dataset} file to --data"
        )
    return path, "existing"


def describe(path):
    """'mnist: 60000 train / 10000 test' (and '/ 5000 val'): what a data file holds."""
    with open_checked(path) as f:
        sizes = " / ".join(f"{len(f[name]['labels'])} {name}" for name in split_names(f))
        return f"{f.attrs['dataset']}: {sizes}"


def hold_out(images, labels, val):
    """Split (images, labels) into (rest, held-out val) with a fixed-seed random choice."""
    n = len(labels)
    if not 0 <= val < n:
        raise ValueError(f"--val {val}: expected 0 <= N < {n} (the number of train images)")
    perm = np.random.default_rng(VAL_SEED).permutation(n)
    held, rest = np.sort(perm[:val]), np.sort(perm[val:])
    return (images[rest], labels[rest]), (images[held], labels[held])


def _prepare(dataset, source, out, force, val):
    """Do the work of prepare() -> (path, "wrote" or "kept", where the IDX files were)."""
    check_dataset(dataset)
    if isinstance(val, bool) or not isinstance(val, int | np.integer) or val < 0:
        raise ValueError(f"--val {val!r}: expected a whole number >= 0")
    out = Path(out) if out else default_out(dataset)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; name the file, e.g. {out / dataset}.h5")
    if out.exists() and not force:
        _check_existing(out, dataset, val)
        return out, "kept", None
    files = fetch(dataset, source)
    splits = {"train": _read_pair(files, "train"), "test": _read_pair(files, "test")}
    if val:
        splits["train"], splits["val"] = hold_out(*splits["train"], val)
    attrs = {"dataset": dataset, "val_size": int(val), "val_seed": VAL_SEED}
    attrs.update({f"sha256_{key}": sha for key, sha in SHA256[dataset].items()})
    _write_atomically(out, splits, attrs)
    return out, "wrote", Path(files["train_images"]).parent


def _read_pair(files, split):
    images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
    images, labels = read_idx(images_path), read_idx(labels_path)
    check_pair(images, labels, images_path, labels_path)
    return images, labels


def _check_existing(out, dataset, val):
    """Keep `out` only if it is intact and holds what was asked for."""
    try:
        attrs = validate(out, deep=True)
    except ValueError as e:
        raise ValueError(f"{e}; use --force to replace it") from None
    found = (str(attrs["dataset"]), int(attrs.get("val_size", 0)))
    if found != (dataset, val):
        raise ValueError(
            f"{out} holds {found[0]} with --val {found[1]}, not {dataset} with --val {val}; "
            f"use --force to replace it or choose another --out"
        )


def _write_atomically(out, splits, attrs):
    """An error or Ctrl-C removes the partial file and leaves `out` as it was (atomic.py)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        write(tmp, splits, attrs)


# --- the command line -------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument(
        "--dataset", choices=DATASETS, default="mnist", help="which data set (default: mnist)"
    )
    parser.add_argument(
        "--source",
        metavar="DIR|URL",
        help="a directory or base URL (http, https, file) holding the four .gz files, directly "
        f"or in a <dataset>/ subfolder (default: ${ENV_SOURCE}, then the cache, then the "
        "public mirrors)",
    )
    parser.add_argument(
        "--out", metavar="FILE.h5", type=Path, help="default: $XDG_CACHE_HOME/mpinet/<dataset>.h5"
    )
    parser.add_argument("--force", action="store_true", help="rewrite --out if it exists")
    parser.add_argument(
        "--val",
        metavar="N",
        type=int,
        default=0,
        help="hold out N train images as /val (the same N images on every run; default: 0)",
    )


def run(args) -> int:
    path, action, _ = _prepare(args.dataset, args.source, args.out, args.force, args.val)
    with open_checked(path) as f:
        sizes = ", ".join(f"{name} {len(f[name]['labels'])}" for name in split_names(f))
        dataset, fingerprint = f.attrs["dataset"], f.attrs["fingerprint"]
    note = " (valid; --force rewrites it)" if action == "kept" else ""
    print(f"{action} {path}{note}: {dataset} {sizes}; fingerprint {fingerprint[:16]}")
    return 0
