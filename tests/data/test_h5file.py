"""The HDF5 data file: every attribute, group and dataset checked; the content fingerprint."""

import re

import h5py
import numpy as np
import pytest

from mpinet.data import fingerprint, h5file, validate


def test_a_good_file_validates_and_reports_its_attributes(make_h5):
    attrs = validate(make_h5(), deep=True)
    assert attrs["format_version"] == h5file.FORMAT_VERSION
    assert attrs["dataset"] == "mnist"
    assert 0 < attrs["pixel_mean"] < 1 and 0 < attrs["pixel_std"] < 1


def _delete(f, name):
    del f[name]


def _replace(f, name, array):
    del f[name]
    f[name] = array


# (how to break the file, the message after "data file PATH: ", before "; rewrite it ...")
BREAKAGES = {
    "no test split": (lambda f: _delete(f, "test"), "no /test group; expected /train and /test"),
    "no labels": (
        lambda f: _delete(f, "train/labels"),
        "no dataset /train/labels; expected uint8 labels",
    ),
    "float images": (
        lambda f: _replace(f, "train/images", np.zeros((1000, 28, 28), np.float32)),
        "/train/images has dtype float32; expected uint8",
    ),
    "flat images": (
        lambda f: _replace(f, "test/images", np.zeros((257, 784), np.uint8)),
        "/test/images has shape (257, 784); expected (N, 28, 28)",
    ),
    "label count": (
        lambda f: _replace(f, "test/labels", np.zeros(256, np.uint8)),
        "/test/labels has shape (256,); expected (257,) to match /test/images",
    ),
    "label range": (
        lambda f: _replace(f, "test/labels", np.full(257, 12, np.uint8)),
        "/test/labels holds 12; expected 0..9",
    ),
    "newer version": (
        lambda f: f.attrs.__setitem__("format_version", 99),
        "data format version 99; this mpinet reads version 1",
    ),
    "no fingerprint": (
        lambda f: f.attrs.__delitem__("fingerprint"),
        "root attribute fingerprint is missing; expected 64 lowercase hex digits",
    ),
    "other data set": (
        lambda f: f.attrs.__setitem__("dataset", "cifar10"),
        "root attribute dataset is 'cifar10'; expected mnist or fashion-mnist",
    ),
    "unknown attribute": (
        lambda f: f.attrs.__setitem__("labels_fixed", 1),
        "root attribute labels_fixed is unknown; expected only dataset, "
        "format_version, created, fingerprint, pixel_mean, pixel_std, val_size, "
        "val_seed, sha256_train_images, sha256_train_labels, sha256_test_images,"
        " sha256_test_labels",
    ),
    "text val_size": (
        lambda f: f.attrs.__setitem__("val_size", "0"),
        "root attribute val_size is str '0'; expected an integer >= 0",
    ),
    "bool val_seed": (
        lambda f: f.attrs.__setitem__("val_seed", True),
        "root attribute val_seed is bool True; expected an integer >= 0",
    ),
    "negative val_seed": (
        lambda f: f.attrs.__setitem__("val_seed", -1),
        "root attribute val_seed is -1; expected an integer >= 0",
    ),
    "val_size without /val": (
        lambda f: f.attrs.__setitem__("val_size", 5),
        "root attribute val_size is 5; expected 0, the size of /val",
    ),
    "zero std": (
        lambda f: f.attrs.__setitem__("pixel_std", 0.0),
        "root attribute pixel_std is 0.0; expected a float in (0, 1]",
    ),
    "nan mean": (
        lambda f: f.attrs.__setitem__("pixel_mean", np.nan),
        "root attribute pixel_mean is nan; expected a float in [0, 1]",
    ),
    "int mean": (
        lambda f: f.attrs.__setitem__("pixel_mean", 0),
        "root attribute pixel_mean is int 0; expected a float in [0, 1]",
    ),
    "bad created": (
        lambda f: f.attrs.__setitem__("created", "last week"),
        "root attribute created is 'last week'; expected an ISO 8601 date and time",
    ),
    "short fingerprint": (
        lambda f: f.attrs.__setitem__("fingerprint", "abc"),
        "root attribute fingerprint is 'abc'; expected 64 lowercase hex",
    ),
    "bad source sha": (
        lambda f: f.attrs.__setitem__("sha256_test_labels", "x" * 64),
        "root attribute sha256_test_labels is 'xxx",
    ),
    "extra group": (
        lambda f: f.create_group("extra"),
        "/extra is an unknown group; expected only the groups /train, /test and /val",
    ),
    "root dataset": (
        lambda f: f.create_dataset("images", data=np.zeros(3, np.uint8)),
        "/images is an unknown dataset; expected only the groups /train, /test",
    ),
    "extra dataset": (
        lambda f: f.create_dataset("train/weights", data=np.zeros(3)),
        "/train/weights is unknown; expected only /train/images and /train/labels",
    ),
    "group attribute": (
        lambda f: f["test"].attrs.__setitem__("note", "x"),
        "/test attribute note is unknown; expected no attributes there",
    ),
    "dataset attribute": (
        lambda f: f["test/labels"].attrs.__setitem__("note", "x"),
        "/test/labels attribute note is unknown; expected no attributes",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_a_broken_file_is_a_one_line_error(make_h5, case):
    path = make_h5()
    breaker, words = BREAKAGES[case]
    with h5py.File(path, "r+") as f:
        breaker(f)
    with pytest.raises(ValueError) as info:
        validate(path)
    text = str(info.value)
    assert text.startswith(f"data file {path}: {words}"), text
    assert text.endswith(f"; rewrite it with `mpinet prepare --force --out {path}`"), text
    assert "\n" not in text


def test_no_version_says_how_to_create_the_file(make_h5):
    path = make_h5()
    with h5py.File(path, "r+") as f:
        del f.attrs["format_version"]
    with pytest.raises(ValueError) as info:
        validate(path)
    assert str(info.value) == (
        f"data file {path}: no format_version attribute; expected an "
        f"mpinet data file; create it with `mpinet prepare --out {path}`"
    )


def test_a_fashion_file_is_named_in_what_to_do(make_h5):
    path = make_h5()
    with h5py.File(path, "r+") as f:
        f.attrs["dataset"] = "fashion-mnist"
        f.attrs["val_seed"] = -1
    with pytest.raises(
        ValueError,
        match=re.escape("rewrite it with `mpinet prepare --dataset fashion-mnist --force --out"),
    ):
        validate(path)


def test_a_val_split_validates_with_its_size(make_h5):
    path = make_h5(n_val=40)
    assert validate(path)["val_size"] == 40
    with h5py.File(path, "r+") as f:
        f.attrs["val_size"] = 41
    with pytest.raises(ValueError, match="val_size is 41; expected 40, the size of /val"):
        validate(path)


@pytest.mark.parametrize(
    "attrs, splits, message",
    [
        (
            {"dataset": "synthetic"},
            ("train", "test"),
            "root attribute dataset is 'synthetic'; expected mnist or fashion-mnist; pass a value",
        ),
        ({"dataset": "mnist", "note": "x"}, ("train", "test"), "root attribute note is unknown"),
        ({"dataset": "mnist"}, ("train", "test", "extra"), "split extra is unknown"),
    ],
)
def test_write_refuses_what_would_not_validate(tmp_path, attrs, splits, message):
    images, labels = np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)
    images[:, 10, 10] = 200  # not blank: pixel_std > 0
    path = tmp_path / "t.h5"
    with pytest.raises(ValueError, match=re.escape(f"data file {path}: {message}")):
        h5file.write(path, {name: (images, labels) for name in splits}, attrs)
    assert not path.exists()


def test_a_file_that_is_not_hdf5_is_rejected(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5\n")
    expected = f"data file {path}: not a readable HDF5 file ("
    with pytest.raises(ValueError, match=re.escape(expected)):
        validate(path)


def test_a_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        validate(tmp_path / "absent.h5")
    assert str(info.value) == (
        f"data file {tmp_path / 'absent.h5'}: no such file; expected an "
        f"HDF5 file made by `mpinet prepare`; create it with `mpinet "
        f"prepare --out {tmp_path / 'absent.h5'}`"
    )


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
