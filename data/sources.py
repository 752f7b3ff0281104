"""Where the four .gz files of each data set come from, and how they are checked.

fetch() looks, in order, at: an explicit source (a directory or a base URL: http, https or
file), the environment variable MPINET_DATA_SOURCE, the per-user cache, then the public
mirrors. A source may hold the four files directly or in a subfolder named after the data set
(so one MPINET_DATA_SOURCE serves both MNIST and Fashion-MNIST). Every file, wherever it comes
from, must have its published sha256; a download is written under a temporary name in the
cache and renamed only once its sha256 is right, so the cache never holds a partial file.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .atomic import replacing
from .messages import one_line

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# The published sums of the canonical .gz files (see ../shared/data/README.md).
SHA256 = {
    "mnist": {
        "train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train_images": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train_labels": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "test_images": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "test_labels": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

# Tried in this order; a mirror that fails once (after retries) is skipped for the rest.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}
DATASETS = tuple(SHA256)
ENV_SOURCE = "MPINET_DATA_SOURCE"
ATTEMPTS = 4  # per file and mirror: transient errors are retried ...
BACKOFF_SECONDS = 0.5  # ... after 0.5, 1, 2 s
TIMEOUT_SECONDS = 30
CHUNK_BYTES = 1 << 20


def user_cache_dir() -> Path:
    """The per-user cache: $XDG_CACHE_HOME/mpinet, by default ~/.cache/mpinet."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mpinet"


def fetch(dataset, source=None, cache_dir=None) -> dict[str, Path]:
    """Return the verified paths of the four .gz files: train_images, ..., test_labels.

    `source` is a directory or a base URL (http, https, file); files in a directory are
    checked where they are, downloads land in <cache_dir>/<dataset>/ (default
    $XDG_CACHE_HOME/mpinet/<dataset>/).
    """
    check_dataset(dataset)
    source = source or os.environ.get(ENV_SOURCE) or None
    cache = Path(cache_dir or user_cache_dir()) / dataset
    local = _local_dir(source)
    if local is not None:
        return _from_directory(local, dataset)
    if source is not None:
        bases = [_join(source, ""), _join(source, dataset + "/")]
        return _download_all(dataset, [bases], cache, hint="check the source URL")
    hint = f"pass --source DIR|URL holding the four .gz files or set {ENV_SOURCE}"
    return _download_all(dataset, [[m] for m in MIRRORS[dataset]], cache, hint)


def check_dataset(dataset):
    if dataset not in SHA256:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)}")


def sha256_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(path, expected):
    """Raise a one-line ValueError unless the file at `path` has sha256 `expected`."""
    found = sha256_of(path)
    if found != expected:
        raise ValueError(f"{path}: sha256 mismatch: expected {expected}, found {found}")


# --- local directories ------------------------------------------------------------------------


def _local_dir(source):
    """The directory a source names (a path or a file:// URL); None for http(s) URLs."""
    if source is None:
        return None
    source = str(source)
    scheme = urllib.parse.urlsplit(source).scheme if "://" in source else ""
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    if scheme:
        raise ValueError(
            f"source {source}: unsupported URL scheme {scheme!r}; "
            f"use a directory or an http://, https:// or file:// URL"
        )
    return Path(source).expanduser()


def _from_directory(directory, dataset):
    if not directory.is_dir():
        raise FileNotFoundError(f"source {directory}: no such directory")
    for folder in (directory, directory / dataset):
        paths = {key: folder / name for key, name in FILES.items()}
        if any(p.is_file() for p in paths.values()):
            missing = [p.name for p in paths.values() if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"source {folder}: missing {', '.join(missing)}")
            for key, path in paths.items():
                verify(path, SHA256[dataset][key])
            return paths
    raise FileNotFoundError(
        f"source {directory}: none of the four {dataset} .gz files is in it or in "
        f"{directory / dataset}"
    )


# --- downloads ------------------------------------------------------------------------------


def _download_all(dataset, mirrors, cache, hint):
    """Fetch each missing file from the first mirror that delivers it with the right sha256.

    `mirrors` is a list of mirrors, each a list of base URLs tried in turn on HTTP 404 (a
    source given by the user may hold the files directly or in a <dataset>/ subfolder).
    """
    cache.mkdir(parents=True, exist_ok=True)
    paths, dead = {}, {}
    for key, name in FILES.items():
        target, expected = cache / name, SHA256[dataset][key]
        if target.is_file() and sha256_of(target) == expected:
            paths[key] = target
            continue
        errors = []
        for bases in mirrors:
            if bases[0] in dead:
                errors.append(f"{bases[0]}: {dead[bases[0]]}")
                continue
            try:
                paths[key] = _download_first(bases, name, target, expected)
                break
            except (OSError, ValueError) as e:
                errors.append(f"{bases[0]}: {one_line(e)}")
                if not isinstance(e, ValueError):  # unreachable: skip it for the other files
                    dead[bases[0]] = one_line(e)
        else:
            raise OSError(
                f"could not get {name} for {dataset} ({'; '.join(errors) or 'no mirror'}); {hint}"
            )
    return paths


def _download_first(bases, name, target, expected):
    for i, base in enumerate(bases):
        try:
            return _download(_join(base, name), target, expected)
        except urllib.error.HTTPError as e:
            if e.code != 404 or i == len(bases) - 1:
                raise
    raise AssertionError("unreachable")


def _download(url, target, expected):
    """Download url to target with retries; only a file with sha256 `expected` is kept."""
    for attempt in range(ATTEMPTS):
        try:
            return _download_once(url, target, expected)
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:  # 404, 403, ...: retrying will not help
                raise
            last = e
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as e:
            last = e  # refused, reset, timed out, cut short: worth another try
        if attempt + 1 < ATTEMPTS:
            time.sleep(BACKOFF_SECONDS * 2**attempt)
    raise OSError(f"{one_line(last)} (after {ATTEMPTS} attempts)") from last


def _download_once(url, target, expected):
    # Written under a temporary name, renamed only with the right sha256; on any error
    # (Ctrl-C too) the partial download is removed (atomic.py).
    with replacing(target) as tmp:
        digest = hashlib.sha256()
        response = urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)
        with response, open(tmp, "xb") as out:
            with _progress(response, target.name) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != expected:
            raise ValueError(
                f"{url}: sha256 mismatch: expected {expected}, found {digest.hexdigest()}"
            )
    return target


def _progress(response, name):
    """A download progress bar on stderr; off when stderr is not a terminal (batch jobs)."""
    size = int(response.headers.get("Content-Length") or 0) or None
    return tqdm(total=size, unit="B", unit_scale=True, desc=name, file=sys.stderr, disable=None)


def _join(base, name):
    return str(base).rstrip("/") + "/" + name
