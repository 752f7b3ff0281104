"""Checkpoint files: exact round trips, and a one-line error for every kind of damage."""

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from mpinet.model import build, load
from mpinet.model.checkpoint import (
    CheckpointError,
    read,
    restore,
    rng_state,
    save,
    set_rng_state,
)
from mpinet.model.optimizers import OPTIMIZERS, create

SPEC = {"name": "simple_cnn", "filters": 4, "hidden": 16, "batchnorm": True}
META = {"step": 600, "epoch": 2, "position": 100, "world_size": 4, "config": "[data]\n",
        "test_accuracy": 0.9876, "augment": False}


def trained(spec=SPEC, optimizer="adam", steps=2, seed=0):
    """A network and optimizer after a few real steps: every array holds something."""
    net = build(spec, seed=seed)
    opt = create(optimizer)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.random((8, 1, 28, 28), dtype=np.float32)
        net.loss(x, rng.integers(0, 10, 8))
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    return net, opt


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
    assert ckpt.optimizer["hyperparameters"] == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999,
                                                 "eps": 1e-7}
    for key, value in META.items():
        assert ckpt.meta[key] == value and type(ckpt.meta[key]) is type(value), key
    assert {"mpinet_version", "numpy_version", "h5py_version", "created"} <= set(ckpt.meta)
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
    save(tmp_path / "c.h5", net, opt)
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
    save(tmp_path / "a.h5", net, create("momentum"))
    assert read(tmp_path / "a.h5").optimizer == {
        "name": "momentum", "iter": 0, "v": None,
        "hyperparameters": {"lr": 0.01, "momentum": 0.9}}
    save(tmp_path / "b.h5", net)
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
    rng = np.random.default_rng((3, 1))
    rng.random(5)
    net = build({"name": "mlp", "hidden": [10]})
    save(tmp_path / "c.h5", net, meta={"dropout_rng": rng_state(rng)})
    expected = rng.random(4)
    other = np.random.default_rng(0)
    set_rng_state(other, read(tmp_path / "c.h5").meta["dropout_rng"])
    assert np.array_equal(other.random(4), expected)


@pytest.mark.parametrize("meta, message", [
    ({"dtype": "x"}, "reserved"),
    ({"order": [1, 2]}, "order=.* is a list"),
])
def test_bad_meta_is_refused_before_writing(tmp_path, meta, message):
    with pytest.raises(ValueError, match=message):
        save(tmp_path / "c.h5", build({"name": "mlp", "hidden": [10]}), meta=meta)
    assert not list(tmp_path.iterdir())


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net, opt = trained()
    path = save(tmp_path / "c.h5", net, opt, {"step": 1})
    before = path.read_bytes()

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("mpinet.model.checkpoint._write_arrays", broken)
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


def edit(change):
    def damage(path):
        with h5py.File(path, "r+") as f:
            change(f)
    return damage


def write_nan(f):
    ds = f["params/conv1.b"]
    values = ds[()]
    values[0] = np.nan
    ds[...] = values
    ds.attrs["sha256"] = __import__("hashlib").sha256(values.tobytes()).hexdigest()


DAMAGE = {
    "flipped bytes": (flip_bytes, "/params/affine1.W checksum mismatch"),
    "truncated": (truncate, "not a readable HDF5 file"),
    "not HDF5": (lambda p: p.write_text("step = 600\n"), "not a readable HDF5 file"),
    "format version": (edit(lambda f: f.attrs.modify("format_version", 99)),
                       "format version 99, this mpinet reads version 1"),
    "no version": (edit(lambda f: f.attrs.__delitem__("format_version")),
                   "not an mpinet checkpoint"),
    "other spec": (edit(lambda f: f.attrs.modify("model_spec", json.dumps({**SPEC,
                                                                           "hidden": 32}))),
                   r"/params/affine1.W has float32 \(576, 16\), the model spec needs float32 "
                   r"\(576, 32\)"),
    "bad spec": (edit(lambda f: f.attrs.modify("model_spec", '{"name": "resnet"}')),
                 "model spec or dtype unusable"),
    "missing array": (edit(lambda f: f.__delitem__("params/affine2.b")),
                      "/params/affine2.b is missing"),
    "missing state": (edit(lambda f: f.__delitem__("state/bn1.running_var")),
                      "/state/bn1.running_var is missing"),
    "extra array": (edit(lambda f: f.create_dataset("params/affine9.W", data=np.zeros(2))),
                    "/params/affine9.W is not in the model spec's layout"),
    "wrong dtype": (edit(lambda f: (f.__delitem__("params/conv1.b"),
                                    f.create_dataset("params/conv1.b", data=np.zeros(4)))),
                    r"/params/conv1.b has float64 \(4,\), the model spec needs float32"),
    "non-finite": (edit(write_nan), "/params/conv1.b holds NaN or Inf"),
    "no checksum": (edit(lambda f: f["params/conv1.W"].attrs.__delitem__("sha256")),
                    "/params/conv1.W has no sha256"),
    "optimizer state": (edit(lambda f: f.__delitem__("optimizer/v")),
                        "/optimizer/v is missing"),
    "optimizer name": (edit(lambda f: f["optimizer"].attrs.modify("name", "lion")),
                       "/optimizer has name 'lion'"),
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

PLAIN_TYPES = (h5py.h5t.TypeStringID, h5py.h5t.TypeIntegerID, h5py.h5t.TypeFloatID,
               h5py.h5t.TypeEnumID)  # an enum only for bool (HDF5's FALSE/TRUE)


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
