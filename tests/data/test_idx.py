"""read_idx and check_pair: the real files, and every way a file can be broken."""

import gzip

import numpy as np
import pytest

from mpinet.data.idx import check_pair, read_idx

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "name, shape",
    [
        ("train-images-idx3-ubyte.gz", (60000, 28, 28)),
        ("train-labels-idx1-ubyte.gz", (60000,)),
        ("t10k-images-idx3-ubyte.gz", (10000, 28, 28)),
        ("t10k-labels-idx1-ubyte.gz", (10000,)),
    ],
)
def test_real_mnist_files_have_the_published_shapes(shared_data, name, shape):
    array = read_idx(shared_data / "mnist" / name)
    assert array.shape == shape
    assert array.dtype == np.uint8


def test_real_mnist_labels_have_the_published_class_counts(shared_data):
    train = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    test = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert np.bincount(train).tolist() == TRAIN_COUNTS
    assert np.bincount(test).tolist() == TEST_COUNTS


@pytest.mark.parametrize("gz", [True, False])
def test_gzipped_and_raw_files_read_the_same(tmp_path, idx_writer, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = idx_writer(tmp_path / ("x.gz" if gz else "x"), images, gz=gz)
    np.testing.assert_array_equal(read_idx(path), images)


def _labels():
    return np.arange(20, dtype=np.uint8) % 10


def _header(magic, *dims):
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


# (what to write, the words the message must contain)
BROKEN = {
    "truncated data": (gzip.compress(_header(2049, 20) + bytes(15)), "truncated"),
    "truncated header": (gzip.compress(_header(2051, 20)[:10]), "truncated IDX header"),
    "tiny file": (gzip.compress(b"\x00\x00"), "truncated IDX header"),
    "wrong magic": (gzip.compress(_header(2052, 20) + bytes(20)), "wrong magic number 2052"),
    "trailing bytes": (gzip.compress(_header(2049, 20) + bytes(25)), "5 unexpected bytes"),
    "not gzip": (b"this is not gzip data at all", "not a valid gzip file"),
    "cut gzip stream": (gzip.compress(_header(2049, 20) + bytes(20))[:-12], "gzip stream"),
    "corrupt gzip": (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 40, "not a valid gzip file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_give_one_line_errors_naming_the_file(tmp_path, case):
    content, words = BROKEN[case]
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_idx(tmp_path / "absent.gz")


def test_check_pair_rejects_different_counts():
    images = np.zeros((20, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="20 images but lab.gz holds 19 labels"):
        check_pair(images, _labels()[:19], "img.gz", "lab.gz")


def test_check_pair_rejects_images_that_are_not_28x28():
    with pytest.raises(ValueError, match=r"images of shape \(20, 27, 28\)"):
        check_pair(np.zeros((20, 27, 28), np.uint8), _labels(), "img.gz", "lab.gz")


def test_check_pair_rejects_labels_passed_as_images():
    with pytest.raises(ValueError, match="expected \\(N, 28, 28\\)"):
        check_pair(_labels(), _labels(), "img.gz", "lab.gz")
