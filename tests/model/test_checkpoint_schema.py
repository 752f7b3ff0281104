"""The whole checkpoint file is validated, not only its arrays: every attribute has a known
name, type and range; unknown groups, datasets and attributes are refused; the metadata has
a checksum; format 1 files (before that checksum) still load. Each case is a real file
changed with h5py, and each failure is one line naming the file and the member."""

import json

import h5py
import numpy as np
import pytest
from checkpoint_support import edit, trained, trainer_meta

from mpinet.model import load
from mpinet.model.checkpoint import CheckpointError, read, save
from mpinet.model.checkpoint.schema import META, ROOT

CORRUPT = "; the file is corrupt, use an earlier checkpoint"
EDITED = "; the file was not written by mpinet or was edited, use another checkpoint"


@pytest.fixture
def path(tmp_path):
    net, opt = trained()
    return save(tmp_path / "ckpt-00000600.h5", net, opt, trainer_meta())


def refused(path):
    """The one-line message read() raises for `path`, without the 'checkpoint PATH: ' head."""
    with pytest.raises(CheckpointError) as error:
        read(path)
    text = str(error.value)
    assert "\n" not in text and isinstance(error.value, ValueError)
    head = f"checkpoint {path}: "
    assert text.startswith(head), text
    return text[len(head) :]


def test_the_example_of_the_brief_word_for_word(path):
    edit(path, lambda f: f.attrs.modify("step", -3))
    with pytest.raises(CheckpointError) as error:
        read(path)
    assert str(error.value) == (
        f"checkpoint {path}: attribute step is -3; expected an integer "
        f">= 0; the file is corrupt, use an earlier checkpoint"
    )


# (attribute, a value of the wrong type or range, the message after "checkpoint PATH: ")
BAD_ROOT = [
    ("weights", "int8", "attribute weights is 'int8'; expected float16 or bfloat16"),
    ("step", np.float64(600.0), "attribute step is a float 600.0; expected an integer >= 0"),
    ("step", "600", "attribute step is the text '600'; expected an integer >= 0"),
    ("step", True, "attribute step is a boolean True; expected an integer >= 0"),
    ("epoch", -1, "attribute epoch is -1; expected an integer >= 0"),
    ("world_size", 0, "attribute world_size is 0; expected an integer >= 1"),
    (
        "world_sizes",
        "[2, 0]",
        "attribute world_sizes is '[2, 0]'; expected JSON text of a "
        "list of integers >= 1 (one per leg)",
    ),
    ("world_sizes", "[2, true]", "attribute world_sizes is '[2, true]'; expected JSON text"),
    ("config", "[data\nx = ", "attribute config is '[data\\nx = '; expected TOML text"),
    (
        "dropout_rngs",
        '[{"bit_generator": "PCG64", "state": 5}]',
        'attribute dropout_rngs is \'[{"bit_generator": "PCG64", "state": 5}]\'; expected '
        "JSON text of a list of NumPy bit-generator states, one per rank",
    ),
    ("dropout_rngs", '[{"bit_generator": "Lehmer"}]', "attribute dropout_rngs is"),
    (
        "running",
        "[[1.0, 2, 3], [4.0, 5]]",
        "attribute running is '[[1.0, 2, 3], [4.0, 5]]'; "
        "expected JSON text of a list of [loss sum, correct, "
        "samples] >= 0 per rank",
    ),
    ("running", "not json", "attribute running is 'not json'; expected JSON text"),
    ("train_seconds", -1.0, "attribute train_seconds is -1.0; expected a finite float >= 0"),
    ("elapsed_seconds", np.nan, "attribute elapsed_seconds is nan; expected a finite float"),
    ("elapsed_seconds", 40, "attribute elapsed_seconds is an integer 40; expected a finite"),
    ("total_steps", 0, "attribute total_steps is 0; expected an integer >= 1"),
    ("data_fingerprint", "AB" * 32, "attribute data_fingerprint is 'ABAB"),
    ("pixel_std", 0.0, "attribute pixel_std is 0.0; expected a finite float > 0"),
    ("test_accuracy", 1.5, "attribute test_accuracy is 1.5; expected a float in [0, 1]"),
    ("init_from", 3, "attribute init_from is an integer 3; expected text"),
    ("init_from_sha256", "abc", "attribute init_from_sha256 is 'abc'; expected 64 lowercase"),
    ("dtype", "float16", "attribute dtype is 'float16'; expected float32 or float64"),
    ("created", "yesterday", "attribute created is 'yesterday'; expected an ISO 8601 date"),
    (
        "model_spec",
        "[1, 2]",
        "attribute model_spec is '[1, 2]'; expected JSON text of a model spec object",
    ),
    ("mpinet_version", 3, "attribute mpinet_version is an integer 3; expected text"),
    ("meta_sha256", "abc", "attribute meta_sha256 is 'abc'; expected 64 lowercase hex"),
]


@pytest.mark.parametrize(
    "key, value, message", BAD_ROOT, ids=[f"{k}={v!r}" for k, v, _ in BAD_ROOT]
)
def test_each_root_attribute_has_a_type_and_a_range(path, key, value, message):
    edit(path, lambda f: f.attrs.__setitem__(key, value))
    text = refused(path)
    assert text.startswith(message) and text.endswith(CORRUPT), text


def test_every_rule_is_exercised():
    assert {key for key, _, _ in BAD_ROOT} | {
        "h5py_version",
        "numpy_version",
        "pixel_mean",
        "format_version",
    } == set(ROOT)


def test_an_unknown_root_attribute_is_refused(path):
    edit(path, lambda f: f.attrs.__setitem__("augment", False))
    text = refused(path)
    assert text.startswith(
        "attribute augment is unknown; expected only format_version, model_spec, dtype, created, "
    )
    assert text.endswith(EDITED) and ", ".join(META) in text


def test_step_is_required(path):
    edit(path, lambda f: f.attrs.__delitem__("step"))
    assert refused(path) == "attribute step is missing; expected an integer >= 0" + CORRUPT


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.create_group("extras"),
            "/extras is an unknown group; expected only the groups /params, /state and /optimizer",
        ),
        (
            lambda f: f.create_dataset("notes", data=np.zeros(3)),
            "/notes is an unknown dataset; expected only the groups",
        ),
        (
            lambda f: f.create_group("params/sub"),
            "/params/sub is a group; expected only datasets in /params" + CORRUPT,
        ),
        (
            lambda f: f["state"].attrs.__setitem__("note", "x"),
            "/state attribute note is unknown; expected no attributes" + EDITED,
        ),
        (
            lambda f: f["params/conv1.W"].attrs.__setitem__("origin", "x"),
            "/params/conv1.W attribute origin is unknown; expected only sha256" + EDITED,
        ),
        (
            lambda f: f["params/conv1.W"].attrs.__delitem__("sha256"),
            "/params/conv1.W attribute sha256 is missing; expected 64 lowercase hex digits",
        ),
        (
            lambda f: f["params/conv1.W"].attrs.modify("sha256", "0" * 40),
            "/params/conv1.W attribute sha256 is '0{40}'; expected 64 lowercase hex digits",
        ),
    ],
)
def test_unknown_groups_datasets_and_attributes_are_refused(path, change, message):
    edit(path, change)
    assert __import__("re").match(message, refused(path)), refused(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.attrs.modify("iter", -1),
            "/optimizer attribute iter is -1; expected an integer >= 0",
        ),
        (
            lambda f: f.attrs.modify("name", "lion"),
            "/optimizer attribute name is 'lion'; expected "
            "one of adagrad, adam, momentum, nesterov",
        ),
        (
            lambda f: f.attrs.__setitem__("lr", "fast"),
            "/optimizer attribute lr is the text 'fast'; expected a finite float >= 0",
        ),
        (
            lambda f: f.attrs.__delitem__("beta2"),
            "/optimizer attributes lr, beta1, eps are the "
            "hyper-parameters; expected those of adam: lr, "
            "beta1, beta2, eps",
        ),
        (
            lambda f: f.attrs.__setitem__("momentum", 0.9),
            "/optimizer attributes .* expected those of adam",
        ),
        (
            lambda f: f.attrs.modify("beta1", 1.5),
            "/optimizer hyper-parameters refused \\(Adam: beta1 must be in \\[0, 1\\), got 1.5\\)",
        ),
        (lambda f: f.attrs.__setitem__("comment", "x"), "/optimizer attribute comment is unknown"),
    ],
)
def test_the_optimizer_attributes_are_checked(path, change, message):
    edit(path, lambda f: change(f["optimizer"]))
    assert __import__("re").match(message, refused(path)), refused(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.attrs.modify("step", 601),
        lambda f: f.attrs.modify("config", '[data]\ndataset = "fashion-mnist"\n'),
        lambda f: f.attrs.modify("test_accuracy", 0.999),
        lambda f: f["optimizer"].attrs.modify("lr", 0.5),
        lambda f: f.attrs.__delitem__("epoch"),
    ],
    ids=["step", "config", "test_accuracy", "optimizer lr", "deleted epoch"],
)
def test_an_attribute_changed_behind_the_checksums_back(path, change):
    edit(path, change)  # a valid value, but not the one saved
    assert refused(path) == (
        "attribute meta_sha256 does not match the root and /optimizer "
        "attributes; expected them as saved (one was changed since)" + CORRUPT
    )
    edit(path, lambda f: None, reseal=True)  # as a consistent writer leaves it: accepted
    read(path)


def as_version_1(f):
    """What the mpinet of format 1 wrote: the same file without meta_sha256."""
    del f.attrs["meta_sha256"]
    f.attrs.modify("format_version", 1)


def test_a_version_1_file_still_loads(path, rng):
    net, _ = trained()
    edit(path, as_version_1)
    ckpt = read(path)
    assert ckpt.meta["step"] == 600 and "meta_sha256" not in ckpt.meta
    assert ckpt.optimizer["iter"] == 2
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(load(path).predict(x), net.predict(x))


def test_a_version_1_file_is_validated_the_same(path):
    edit(path, lambda f: (as_version_1(f), f.attrs.modify("step", -3)))
    assert refused(path).startswith("attribute step is -3; expected an integer >= 0")
    edit(
        path, lambda f: (f.attrs.modify("step", 600), f.attrs.__setitem__("meta_sha256", "0" * 64))
    )
    assert refused(path).startswith("attribute meta_sha256 is unknown")  # not in format 1


def test_an_unknown_format_version(path):
    edit(path, lambda f: f.attrs.modify("format_version", 99))
    assert refused(path) == (
        "format version 99; this mpinet reads versions 1 and 2; use a matching mpinet version"
    )
    edit(path, lambda f: f.attrs.__delitem__("format_version"))
    assert refused(path).startswith("no format_version attribute; expected an mpinet checkpoint")


def test_the_training_loops_meta_round_trips(path):
    meta = read(path).meta
    assert json.loads(meta["world_sizes"]) == [2, 4] and len(json.loads(meta["running"])) == 4
    with h5py.File(path, "r") as f:
        assert set(f) == {"params", "state", "optimizer"}
