"""The HDF5 layout checks and the content fingerprint."""

import h5py
import numpy as np
import pytest

from mpinet.data import fingerprint, h5file, validate


def test_a_good_file_validates_and_reports_its_attributes(make_h5):
    attrs = validate(make_h5(), deep=True)
    assert attrs["format_version"] == h5file.FORMAT_VERSION
    assert attrs["dataset"] == "synthetic"
    assert 0 < attrs["pixel_mean"] < 1 and 0 < attrs["pixel_std"] < 1


def _delete(f, name):
    del f[name]


def _replace(f, name, array):
    del f[name]
    f[name] = array


# (how to break the file, the words the message must contain)
BREAKAGES = {
    "no test split": (lambda f: _delete(f, "test"), "no /test group"),
    "no labels": (lambda f: _delete(f, "train/labels"), "no dataset /train/labels"),
    "float images": (
        lambda f: _replace(f, "train/images", np.zeros((1000, 28, 28), np.float32)),
        "/train/images has dtype float32, expected uint8",
    ),
    "flat images": (
        lambda f: _replace(f, "test/images", np.zeros((257, 784), np.uint8)),
        r"/test/images has shape \(257, 784\), expected \(N, 28, 28\)",
    ),
    "label count": (
        lambda f: _replace(f, "test/labels", np.zeros(256, np.uint8)),
        r"/test/labels has shape \(256,\), expected \(257,\)",
    ),
    "label range": (
        lambda f: _replace(f, "test/labels", np.full(257, 12, np.uint8)),
        "holds 12, expected 0..9",
    ),
    "newer version": (
        lambda f: f.attrs.__setitem__("format_version", 99),
        "version 99, this mpinet reads version 1; rewrite it with `mpinet prepare --force`",
    ),
    "no version": (lambda f: f.attrs.__delitem__("format_version"), "not an mpinet data file"),
    "no fingerprint": (lambda f: f.attrs.__delitem__("fingerprint"), "missing root attributes"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_a_broken_layout_is_a_one_line_error(make_h5, case):
    path = make_h5()
    breaker, words = BREAKAGES[case]
    with h5py.File(path, "r+") as f:
        breaker(f)
    with pytest.raises(ValueError, match=words) as info:
        validate(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_hdf5_is_rejected(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5\n")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        validate(path)


def test_a_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="mpinet prepare"):
        validate(tmp_path / "absent.h5")


def test_deep_validation_finds_changed_content(make_h5):
    path = make_h5()
    assert validate(path) is not None
    with h5py.File(path, "r+") as f:
        f["train/images"][5, 10, 10] ^= 1
    validate(path)  # the layout is still fine ...
    with pytest.raises(ValueError, match="does not match its fingerprint"):
        validate(path, deep=True)  # ... the content is not


def test_the_fingerprint_depends_on_content_only(make_h5):
    a, b = make_h5(name="a.h5"), make_h5(name="b.h5")
    with h5py.File(b, "r+") as f:
        f.attrs["created"] = "1970-01-01T00:00:00+00:00"
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(make_h5(n_train=999, name="c.h5"))
    assert len(fingerprint(a)) == 64


def test_the_fingerprint_sees_a_single_pixel():
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.zeros(4, np.uint8)
    before = h5file.content_fingerprint({"train": (images, labels), "test": (images, labels)})
    changed = images.copy()
    changed[3, 27, 27] = 1
    after = h5file.content_fingerprint({"train": (changed, labels), "test": (images, labels)})
    assert before != after


def test_pixel_stats_are_exact():
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    mean, std = h5file.pixel_stats(images)
    assert mean == pytest.approx((images / 255.0).mean(), rel=1e-12)
    assert std == pytest.approx((images / 255.0).std(), rel=1e-12)


def test_open_checked_opens_read_only(make_h5):
    with h5file.open_checked(make_h5()) as f:
        assert f.mode == "r"
        assert h5file.split_names(f) == ["train", "test"]
