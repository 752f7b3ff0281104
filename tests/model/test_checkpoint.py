"""Checkpoint files: exact round trips, and a one-line error for every kind of damage."""

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from checkpoint_support import SPEC, edit, trained, trainer_meta

from mpinet.model import build, load
from mpinet.model.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    read,
    restore,
    rng_state,
    save,
    set_rng_state,
)
from mpinet.model.optimizers import OPTIMIZERS, create

META = trainer_meta()


@pytest.fixture
def saved(tmp_path):
    net, opt = trained()
    path = save(tmp_path / "ckpt-00000600.h5", net, opt, META)
    return path, net, opt


def test_round_trip_is_bitwise(saved):
    path, net, opt = saved
    ckpt = read(path)
    for name, view in net.buffer.params.items():
        assert ckpt.params[name].tobytes() == view.tobytes(), name
        assert ckpt.params[name].shape == view.shape  # the book's shapes
    for name, view in net.state.params.items():
        assert ckpt.state[name].tobytes() == view.tobytes(), name
    assert ckpt.optimizer["name"] == "adam" and ckpt.optimizer["iter"] == 2
    assert ckpt.optimizer["m"].tobytes() == opt.m.tobytes()
    assert ckpt.optimizer["v"].tobytes() == opt.v.tobytes()
    assert ckpt.optimizer["hyperparameters"] == {
        "lr": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-7,
    }
    for key, value in META.items():
        assert ckpt.meta[key] == value and type(ckpt.meta[key]) is type(value), key
    assert set(ckpt.meta) == set(META) | {
        "mpinet_version",
        "numpy_version",
        "h5py_version",
        "created",
    }
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 2
        assert len(f.attrs["meta_sha256"]) == 64
    assert ckpt.spec == json.loads(json.dumps(net.spec)) and ckpt.dtype == "float32"
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind


def test_load_gives_a_network_that_predicts_the_same(saved, rng):
    path, net, _ = saved
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    loaded = load(path)
    assert loaded.buffer.data.tobytes() == net.buffer.data.tobytes()
    assert np.array_equal(loaded.predict(x), net.predict(x))
    assert np.allclose(loaded.predict_proba(x).sum(axis=1), 1)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_restore_continues_training_bitwise(tmp_path, name):
    spec = {"name": "mlp", "hidden": [20], "batchnorm": True}
    net, opt = trained(spec, name, steps=3)
    save(tmp_path / "c.h5", net, opt, {"step": 3})
    other, other_opt = build(spec, seed=9), create(name)
    views = dict(other.buffer.params)
    restore(read(tmp_path / "c.h5"), other, other_opt)
    assert all(other.buffer.params[k] is v for k, v in views.items())  # never rebound
    assert other.buffer.shares_memory()
    for n, o in ((net, opt), (other, other_opt)):  # one more identical step on both
        n.buffer.grad[...] = np.linspace(-1, 1, n.buffer.size, dtype=np.float32)
        o.update(n.buffer.data, n.buffer.grad)
    assert other.buffer.data.tobytes() == net.buffer.data.tobytes()
    assert other_opt.iter == opt.iter == 4


def test_an_optimizer_before_its_first_step_and_no_optimizer(tmp_path):
    net = build({"name": "mlp", "hidden": [10]})
    save(tmp_path / "a.h5", net, create("momentum"), {"step": 0})
    assert read(tmp_path / "a.h5").optimizer == {
        "name": "momentum",
        "iter": 0,
        "v": None,
        "hyperparameters": {"lr": 0.01, "momentum": 0.9},
    }
    save(tmp_path / "b.h5", net, meta={"step": 0})
    ckpt = read(tmp_path / "b.h5")
    assert ckpt.optimizer is None
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        restore(ckpt, build({"name": "mlp", "hidden": [10]}), create("sgd"))


def test_restore_refuses_another_network_or_optimizer(saved):
    path, _, _ = saved
    ckpt = read(path)
    with pytest.raises(CheckpointError, match="model spec differs .* in hidden"):
        restore(ckpt, build({**SPEC, "hidden": 17}))
    with pytest.raises(CheckpointError, match="layout differs"):
        restore(ckpt, build(SPEC, dtype="float64"))
    with pytest.raises(CheckpointError, match="holds adam state, the optimizer is sgd"):
        restore(ckpt, build(SPEC), create("sgd"))


def test_rng_state_round_trips_through_meta(tmp_path):
    rngs = [np.random.default_rng((3, rank)) for rank in range(2)]
    for rng in rngs:
        rng.random(5)
    net = build({"name": "mlp", "hidden": [10]})
    text = "[" + ", ".join(rng_state(rng) for rng in rngs) + "]"
    save(tmp_path / "c.h5", net, meta={"step": 1, "dropout_rngs": text})
    expected = rngs[1].random(4)
    other = np.random.default_rng(0)
    stored = json.loads(read(tmp_path / "c.h5").meta["dropout_rngs"])
    set_rng_state(other, json.dumps(stored[1]))
    assert np.array_equal(other.random(4), expected)


@pytest.mark.parametrize(
    "meta, message",
    [
        (
            {"step": 1, "dtype": "x"},
            "checkpoint meta: key dtype is reserved; expected a key of "
            "step, epoch, .*; save\\(\\) writes dtype itself, leave it out",
        ),
        (
            {"step": 1, "order": [1, 2]},
            "checkpoint meta: key order is unknown; expected one of step",
        ),
        ({"step": -3}, "checkpoint meta: step is -3; expected an integer >= 0; pass a value"),
        ({"step": True}, "checkpoint meta: step is a boolean True; expected an integer >= 0"),
        ({"step": "600"}, "checkpoint meta: step is the text '600'; expected an integer >= 0"),
        ({"step": 1, "test_accuracy": 1.5}, "test_accuracy is 1.5; expected a float in \\[0, 1\\]"),
        (
            {"step": 1, "running": "[[1, 2]]"},
            "running is '\\[\\[1, 2\\]\\]'; expected JSON text of a "
            "list of \\[loss sum, correct, samples\\]",
        ),
        ({"step": 1, "config": "[data"}, "config is '\\[data'; expected TOML text"),
        ({"epoch": 1}, "checkpoint meta: step is missing; expected an integer >= 0"),
    ],
)
def test_bad_meta_is_refused_before_writing(tmp_path, meta, message):
    with pytest.raises(CheckpointError, match=message) as error:
        save(tmp_path / "c.h5", build({"name": "mlp", "hidden": [10]}), meta=meta)
    assert "\n" not in str(error.value) and isinstance(error.value, ValueError)
    assert not list(tmp_path.iterdir())


def test_numpy_numbers_in_meta_are_stored_as_python_types(tmp_path):
    meta = {"step": np.int64(5), "pixel_mean": np.float32(0.25), "train_seconds": 2}
    save(tmp_path / "c.h5", build({"name": "mlp", "hidden": [10]}), meta=meta)
    stored = read(tmp_path / "c.h5").meta
    assert (stored["step"], stored["pixel_mean"], stored["train_seconds"]) == (5, 0.25, 2.0)
    assert type(stored["step"]) is int and type(stored["train_seconds"]) is float


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net, opt = trained()
    path = save(tmp_path / "c.h5", net, opt, {"step": 1})
    before = path.read_bytes()

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("mpinet.model.checkpoint.writing._write_arrays", broken)
    with pytest.raises(OSError, match="disk full"):
        save(path, net, opt, {"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


# -- damage: each kind is a one-line CheckpointError naming the file -----------------------


def flip_bytes(path):
    with h5py.File(path, "r") as f:
        offset = f["params/affine1.W"].id.get_offset()
    data = bytearray(path.read_bytes())
    for i in range(offset + 10, offset + 14):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def changed(change, reseal=False):
    return lambda path: edit(path, change, reseal)


def add_dataset(f, name, data):
    """A dataset as save() writes one: with the sha256 of its bytes."""
    f.create_dataset(name, data=data).attrs["sha256"] = (
        __import__("hashlib").sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    )


def write_nan(f):
    ds = f["params/conv1.b"]
    values = ds[()]
    values[0] = np.nan
    ds[...] = values
    ds.attrs["sha256"] = __import__("hashlib").sha256(values.tobytes()).hexdigest()


CORRUPT = "; the file is corrupt, use an earlier checkpoint"
# The array checks; every rule about attributes and members is in test_checkpoint_schema.py.
# reseal=True: meta_sha256 recomputed after the edit, so the check behind it is reached.
DAMAGE = {
    "flipped bytes": (
        flip_bytes,
        "/params/affine1.W does not match its sha256 attribute; "
        "expected the bytes that were saved" + CORRUPT,
    ),
    "truncated": (
        truncate,
        r"not a readable HDF5 file \(.*\); expected a checkpoint; it is "
        r"truncated or damaged, use another",
    ),
    "not HDF5": (lambda p: p.write_bytes(b"step = 600\n" * 200), "not a readable HDF5 file"),
    "other spec": (
        changed(
            lambda f: f.attrs.modify("model_spec", json.dumps({**SPEC, "hidden": 32})), reseal=True
        ),
        r"/params/affine1.W has float32 \(576, 16\); the model spec needs float32 "
        r"\(576, 32\)" + CORRUPT,
    ),
    "bad spec": (
        changed(lambda f: f.attrs.modify("model_spec", '{"name": "alexnet"}'), True),
        "attribute model_spec is not a spec this mpinet builds \\(model.name: got "
        "'alexnet'.*\\); expected one of its model specs; use a matching mpinet version",
    ),
    "missing array": (
        changed(lambda f: f.__delitem__("params/affine2.b")),
        r"/params/affine2.b is missing; expected a float32 array of shape "
        r"\(10,\)" + CORRUPT,
    ),
    "missing state": (
        changed(lambda f: f.__delitem__("state/bn1.running_var")),
        "/state/bn1.running_var is missing",
    ),
    "extra array": (
        changed(lambda f: add_dataset(f, "params/affine9.W", np.zeros(2))),
        "/params/affine9.W is not in the layout of its model_spec; expected only "
        "conv1.W, conv1.b, .*, affine2.b" + CORRUPT,
    ),
    "wrong dtype": (
        changed(
            lambda f: (
                f.__delitem__("params/conv1.b"),
                add_dataset(f, "params/conv1.b", np.zeros(4)),
            )
        ),
        r"/params/conv1.b has float64 \(4,\); the model spec needs float32",
    ),
    "non-finite": (
        changed(write_nan),
        "/params/conv1.b holds NaN or Inf; expected finite numbers .*; use an earlier checkpoint",
    ),
    "optimizer state": (changed(lambda f: f.__delitem__("optimizer/v")), "/optimizer/v is missing"),
    "optimizer array": (
        changed(lambda f: add_dataset(f, "optimizer/h", np.zeros(3))),
        "/optimizer/h is not part of adam's state; expected only m, v",
    ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_is_a_one_line_error(saved, kind):
    path = saved[0]
    damage, message = DAMAGE[kind]
    damage(path)
    with pytest.raises(CheckpointError, match=message) as error:
        read(path)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"checkpoint {path}: ")
    assert isinstance(error.value, ValueError)


def test_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "nothing.h5")


# -- readable with standard HDF5 tools -----------------------------------------------------

PLAIN_TYPES = (
    h5py.h5t.TypeStringID,
    h5py.h5t.TypeIntegerID,
    h5py.h5t.TypeFloatID,
    h5py.h5t.TypeEnumID,
)  # an enum only for bool (HDF5's FALSE/TRUE)


def test_only_numbers_and_strings(saved):
    path = saved[0]
    nodes = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: nodes.append((name, node)))
        for name, node in [("/", f)] + nodes:
            for key in node.attrs:
                kind = node.attrs.get_id(key).get_type()
                assert isinstance(kind, PLAIN_TYPES), f"{name} attribute {key}: {kind}"
                if isinstance(kind, h5py.h5t.TypeEnumID):
                    assert isinstance(node.attrs[key], np.bool_), f"{name}/{key}"
            if isinstance(node, h5py.Dataset):
                assert node.dtype.kind == "f", f"{name}: {node.dtype}"
    datasets = [name for name, node in nodes if isinstance(node, h5py.Dataset)]
    assert "params/conv1.W" in datasets and "state/bn1.running_mean" in datasets
    assert "optimizer/m" in datasets


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_h5dump_reads_it(saved):
    out = subprocess.run(["h5dump", "-H", str(saved[0])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'DATASET "conv1.W"' in out.stdout and 'ATTRIBUTE "model_spec"' in out.stdout
