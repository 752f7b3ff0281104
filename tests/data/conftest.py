"""Fixtures for the data tests: the real files, small synthetic ones, a local HTTP server.

No test touches the user's cache or the internet: XDG_CACHE_HOME points into tmp_path,
MPINET_DATA_SOURCE is unset and the public mirror list is emptied for every test.
"""

import gzip
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mpinet.data import h5file, sources


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(sources.ENV_SOURCE, raising=False)
    monkeypatch.setattr(sources, "MIRRORS", {name: [] for name in sources.MIRRORS})
    monkeypatch.setattr(sources, "BACKOFF_SECONDS", 0.0)


# --- synthetic data ------------------------------------------------------------------------


def synthetic_split(n, first_id, seed):
    """Random images whose first two pixels spell a sample id (first_id + i); labels id % 10."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images, (ids % 10).astype(np.uint8)


def sample_ids(x):
    """The ids written by synthetic_split, read back from a unit-scaled batch x."""
    pixels = np.rint(np.asarray(x, dtype=np.float64).reshape(len(x), -1)[:, :2] * 255)
    return (pixels[:, 0] + 256 * pixels[:, 1]).astype(np.int64)


@pytest.fixture
def ids():
    return sample_ids


@pytest.fixture
def make_h5(tmp_path):
    """make_h5(n_train, n_test, n_val) -> path of a small file with the real layout.

    Train ids are 0..n_train-1, test ids start at 10000, val ids at 20000.
    """

    def make(n_train=1000, n_test=257, n_val=0, name="synthetic.h5"):
        splits = {
            "train": synthetic_split(n_train, 0, 1),
            "test": synthetic_split(n_test, 10000, 2),
        }
        if n_val:
            splits["val"] = synthetic_split(n_val, 20000, 3)
        path = tmp_path / name
        attrs = {"dataset": "mnist", "val_size": n_val, "val_seed": 0}  # a known data set
        h5file.write(path, splits, attrs)
        return path

    return make


def write_idx(path, array, magic=None, gz=True):
    """Write `array` as an IDX file (gzipped unless gz=False), with the magic for its rank."""
    magic = magic if magic is not None else (0x800 | array.ndim)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    Path(path).write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return Path(path)


@pytest.fixture
def idx_writer():
    return write_idx


@pytest.fixture
def tiny_source(tmp_path, monkeypatch):
    """tiny_source(...) -> a directory with four small .gz files of a data set named "tiny".

    Their sha256 sums are registered as the published ones for "tiny" for this test, so
    prepare(dataset="tiny", ...) runs the whole real path in milliseconds.
    """

    def make(n_train=300, n_test=70, folder="tiny-source", test_labels=None):
        directory = tmp_path / folder
        directory.mkdir(parents=True, exist_ok=True)
        train, test = synthetic_split(n_train, 0, 1), synthetic_split(n_test, 10000, 2)
        arrays = {
            "train_images": train[0],
            "train_labels": train[1],
            "test_images": test[0],
            "test_labels": test[1] if test_labels is None else test_labels,
        }
        sums = {}
        for key, name in sources.FILES.items():
            sums[key] = sources.sha256_of(write_idx(directory / name, arrays[key]))
        monkeypatch.setitem(sources.SHA256, "tiny", sums)
        return directory

    return make


# --- a local HTTP server --------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(directory, handler=QuietHandler) -> base URL of an HTTP server on 127.0.0.1."""
    running = []

    def start(directory, handler=QuietHandler):
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, directory=str(directory))
        )
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()
