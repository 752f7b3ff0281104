"""fetch: local directories, file:// and http:// sources, the cache, mirrors and retries."""

import http.server
import os
from pathlib import Path

import pytest

from mpinet.data import fetch, sources

KEYS = ["train_images", "train_labels", "test_images", "test_labels"]


def _corrupt_copy(shared_data, tmp_path, name="t10k-labels-idx1-ubyte.gz"):
    """A directory with the four MNIST files, one of them with a flipped byte."""
    directory = tmp_path / "corrupt"
    directory.mkdir()
    for file in sources.FILES.values():
        (directory / file).symlink_to(shared_data / "mnist" / file)
    content = bytearray((shared_data / "mnist" / name).read_bytes())
    content[100] ^= 0xFF
    (directory / name).unlink()
    (directory / name).write_bytes(bytes(content))
    return directory


def _cache_files(tmp_path):
    cache = tmp_path / "xdg-cache"
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_a_directory_source_is_verified_and_used_in_place(shared_data):
    paths = fetch("mnist", source=shared_data / "mnist")
    assert sorted(paths) == sorted(KEYS)
    for key, path in paths.items():
        assert path == shared_data / "mnist" / sources.FILES[key]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_env_var_may_name_the_parent_of_per_dataset_folders(shared_data, monkeypatch, dataset):
    monkeypatch.setenv("MPINET_DATA_SOURCE", str(shared_data))
    paths = fetch(dataset)
    assert paths["train_images"] == shared_data / dataset / "train-images-idx3-ubyte.gz"


def test_a_wrong_sha256_in_a_directory_names_file_and_both_sums(shared_data, tmp_path):
    directory = _corrupt_copy(shared_data, tmp_path)
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        fetch("mnist", source=directory)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert sources.SHA256["mnist"]["test_labels"] in message
    assert sources.sha256_of(directory / "t10k-labels-idx1-ubyte.gz") in message
    assert "\n" not in message


def test_the_files_of_the_other_dataset_are_rejected(shared_data):
    with pytest.raises(ValueError, match="sha256 mismatch"):
        fetch("fashion-mnist", source=shared_data / "mnist")


def test_a_directory_missing_one_file_says_which(shared_data, tmp_path):
    for name in list(sources.FILES.values())[1:]:
        (tmp_path / name).symlink_to(shared_data / "mnist" / name)
    with pytest.raises(FileNotFoundError, match="missing train-images-idx3-ubyte.gz"):
        fetch("mnist", source=tmp_path)


def test_a_directory_without_the_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of the four mnist .gz files"):
        fetch("mnist", source=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        fetch("mnist", source=tmp_path / "absent")


def test_http_source_downloads_verifies_and_caches(shared_data, serve, tmp_path):
    url = serve(shared_data / "mnist")
    paths = fetch("mnist", source=url)
    cache = tmp_path / "xdg-cache" / "mpinet" / "mnist"
    for key, path in paths.items():
        assert path == cache / sources.FILES[key]
        assert sources.sha256_of(path) == sources.SHA256["mnist"][key]
    assert _cache_files(tmp_path) == sorted(sources.FILES.values())  # no temporary left


def test_http_source_with_per_dataset_folders(shared_data, serve):
    url = serve(shared_data)  # serves mnist/ and fashion-mnist/
    assert sorted(fetch("mnist", source=url)) == sorted(KEYS)


def test_a_corrupted_download_is_rejected_and_not_cached(shared_data, serve, tmp_path):
    url = serve(_corrupt_copy(shared_data, tmp_path))
    with pytest.raises(OSError, match="sha256 mismatch: expected") as info:
        fetch("mnist", source=url)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert "\n" not in str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" not in _cache_files(tmp_path)
    assert not [name for name in _cache_files(tmp_path) if name.endswith(".tmp")]


class _InterruptedProgress:
    """A progress bar whose first update is a Ctrl-C."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        raise KeyboardInterrupt


def test_ctrl_c_during_a_download_leaves_no_partial_file(shared_data, serve, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_progress", lambda response, name: _InterruptedProgress())
    with pytest.raises(KeyboardInterrupt):
        fetch("mnist", source=serve(shared_data / "mnist"))
    assert _cache_files(tmp_path) == []


def test_file_url_source(shared_data):
    paths = fetch("mnist", source=(shared_data / "mnist").as_uri())
    assert paths["test_labels"] == shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"


def test_the_cache_is_used_when_no_source_is_given(shared_data, serve):
    first = fetch("mnist", source=serve(shared_data / "mnist"))
    stamps = {key: os.stat(path).st_mtime_ns for key, path in first.items()}
    again = fetch("mnist")  # no source, no mirror: only the cache can answer
    assert again == first
    assert {key: os.stat(path).st_mtime_ns for key, path in again.items()} == stamps


def test_mirrors_are_tried_in_order(shared_data, serve, tmp_path, monkeypatch):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    mirrors = [serve(empty), serve(shared_data / "mnist")]  # the first answers 404
    monkeypatch.setitem(sources.MIRRORS, "mnist", mirrors)
    paths = fetch("mnist")
    assert sources.sha256_of(paths["train_labels"]) == sources.SHA256["mnist"]["train_labels"]


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Answers 503 to the first request for each path, then serves the file."""

    seen = set()

    def do_GET(self):
        if self.path not in FlakyHandler.seen:
            FlakyHandler.seen.add(self.path)
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried(shared_data, serve):
    FlakyHandler.seen = set()
    paths = fetch("mnist", source=serve(shared_data / "mnist", FlakyHandler))
    assert sorted(paths) == sorted(KEYS)
    assert len(FlakyHandler.seen) == 4


class DownHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.send_error(503, "down for maintenance")

    def log_message(self, *args):
        pass


def test_a_mirror_that_stays_down_is_given_up_after_the_retries(tmp_path, serve, monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [serve(tmp_path, DownHandler)])
    with pytest.raises(OSError, match=f"after {sources.ATTEMPTS} attempts"):
        fetch("mnist")


def test_a_mirror_with_a_corrupt_file_is_passed_over(shared_data, serve, tmp_path, monkeypatch):
    mirrors = [serve(_corrupt_copy(shared_data, tmp_path)), serve(shared_data / "mnist")]
    monkeypatch.setitem(sources.MIRRORS, "mnist", mirrors)
    paths = fetch("mnist")
    assert sources.sha256_of(paths["test_labels"]) == sources.SHA256["mnist"]["test_labels"]


def test_no_source_no_cache_no_mirror_is_a_one_line_error():
    with pytest.raises(OSError, match="MPINET_DATA_SOURCE") as info:
        fetch("mnist")
    assert "\n" not in str(info.value)


def test_an_unreachable_mirror_is_reported(monkeypatch):
    monkeypatch.setattr(sources, "ATTEMPTS", 2)
    monkeypatch.setitem(sources.MIRRORS, "mnist", ["http://127.0.0.1:9/"])  # nothing listens
    with pytest.raises(OSError, match="could not get train-images-idx3-ubyte.gz"):
        fetch("mnist")


def test_unsupported_url_schemes_and_datasets_are_rejected():
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        fetch("mnist", source="ftp://example.org/mnist/")
    with pytest.raises(ValueError, match="unknown data set 'cifar10'"):
        fetch("cifar10")


def test_cache_dir_follows_xdg(tmp_path):
    assert sources.user_cache_dir() == Path(os.environ["XDG_CACHE_HOME"]) / "mpinet"
    assert sources.user_cache_dir().is_relative_to(tmp_path)
