"""Transfer learning in process (worker/transfer.py): the frozen mask in the optimizer, frozen
BatchNorm, parameters copied by name from a checkpoint, and whole short runs on the real
MNIST with a LocalComm (the same under mpirun: tests/integration/test_transfer.py)."""

import hashlib

import numpy as np
import pytest

from mpinet.cluster import AllRanksError, LocalComm
from mpinet.model import build
from mpinet.model.checkpoint import read
from mpinet.model.gradient import numerical_gradient
from mpinet.model.layers import BatchNormalization
from mpinet.model.optimizers import OPTIMIZERS, create
from mpinet.model.params import ParamBuffer
from mpinet.worker.checkpoint_dir import find_resume
from mpinet.worker.config import load_config
from mpinet.worker.loop import train
from mpinet.worker.transfer import Frozen, copy_by_name

MLP = ["model.name='mlp'", "model.hidden=[64]", "train.plots=false", "train.log_every=10"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_frozen_ranges_stay_bitwise_and_keep_zero_state_in_every_optimizer(name, rng):
    data = rng.standard_normal(40).astype(np.float32)
    data[3] = -0.0  # x - 0 keeps even the sign of a zero
    before = data.copy()
    frozen = [(0, 10), (25, 30)]
    opt = create(name, lr=0.01, frozen=frozen)
    for _ in range(5):
        opt.update(data, rng.standard_normal(40).astype(np.float32))
    mask = np.zeros(40, bool)
    mask[0:10] = mask[25:30] = True
    assert data[mask].tobytes() == before[mask].tobytes()
    assert np.all(data[~mask] != before[~mask])
    for key, state in opt.state_dict().items():
        if key != "iter":
            assert not state[mask].any(), key


def test_without_frozen_ranges_the_update_is_the_plain_one(rng):
    grad = rng.standard_normal(30).astype(np.float32)
    a, b = np.ones(30, np.float32), np.ones(30, np.float32)
    create("adam", lr=0.01).update(a, grad.copy())
    OPTIMIZERS["adam"](lr=0.01).update(b, grad.copy())
    assert a.tobytes() == b.tobytes()


def test_ranges_merge_neighbouring_parameters():
    buffer = ParamBuffer([("a.W", (2, 3)), ("a.b", (3,)), ("b.W", (3, 2)), ("c.b", (4,))])
    assert buffer.ranges(["a.W", "a.b"]) == [(0, 9)]
    assert buffer.ranges(["c.b", "a.W"]) == [(0, 6), (15, 19)]
    assert buffer.ranges([]) == []


def _bn(rng, dtype=np.float64):
    gamma, beta = rng.standard_normal(4) + 1, rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.random(4) + 0.5
    layer = BatchNormalization(gamma, beta, np.zeros(4), np.zeros(4), mean, var)
    layer.frozen = True
    return layer


def test_a_frozen_batchnorm_trains_with_its_running_statistics_and_keeps_them(rng):
    bn = _bn(rng)
    stats = bn.running_mean.copy(), bn.running_var.copy()
    x = rng.standard_normal((6, 4))
    out = bn.forward(x, train=True)
    np.testing.assert_array_equal(out, bn.forward(x, train=False))
    np.testing.assert_array_equal(bn.running_mean, stats[0])
    np.testing.assert_array_equal(bn.running_var, stats[1])
    dout = rng.standard_normal((6, 4))
    dx = bn.backward(dout)
    numeric = numerical_gradient(lambda: float(np.sum(bn.forward(x, train=True) * dout)), x)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)  # constants: an affine map
    np.testing.assert_allclose(bn.dgamma, ((out - bn.beta) / bn.gamma * dout).sum(axis=0))


class ThreeRanks(LocalComm):
    """allreduce_mean_ as three ranks holding the same values would compute it."""

    world_size = 3

    def allreduce_mean_(self, buf):
        total = buf + buf
        total += buf
        buf[...] = total / 3


def test_frozen_batchnorm_statistics_survive_the_mean_over_ranks_bitwise(rng):
    sets = ["model.name='mlp'", "model.batchnorm=true", "model.hidden=[8, 8]"]
    cfg = load_config(None, [*sets, "train.freeze=['affine1', 'bn1']"])
    net = build({"name": "mlp", "hidden": [8, 8], "batchnorm": True}, seed=0)
    net.state.data[...] = rng.standard_normal(net.state.size).astype(np.float32) * 3.7
    before = net.state.data.copy()
    frozen = Frozen(cfg, LocalComm(), net)
    assert net.layers["bn1"].frozen and not net.layers["bn2"].frozen
    frozen.average_state_(ThreeRanks(), net)
    kept = slice(*frozen.state[0])
    assert net.state.data[kept].tobytes() == before[kept].tobytes()
    plain = before.copy()
    ThreeRanks().allreduce_mean_(plain)
    assert plain.tobytes() != before.tobytes()  # without the copy, some bits would move
    np.testing.assert_array_equal(net.state.data[kept.stop :], plain[kept.stop :])


def test_a_freeze_prefix_that_matches_nothing_is_one_line():
    cfg = load_config(None, ["model.name='mlp'", "train.freeze=['conv1']"])
    net = build({"name": "mlp", "hidden": [8]}, seed=0)
    with pytest.raises(AllRanksError) as error:
        Frozen(cfg, LocalComm(), net)
    assert str(error.value).startswith(
        "config key train.freeze: 'conv1' matches no parameter; expected a prefix of one of "
        "affine1.W, affine1.b, affine2.W, affine2.b"
    )


def test_copy_by_name_checks_every_name_and_shape_before_copying(checkpoint):
    source = read(checkpoint)  # mlp 784-64-10
    net = build({"name": "mlp", "hidden": [64, 32]}, seed=0)
    before = net.buffer.data.copy()
    with pytest.raises(ValueError) as error:
        copy_by_name(source, net, [], "SRC")
    assert str(error.value) == (
        "train.init_from SRC: affine2.W has shape (64, 10) there, (64, 32) here; expected "
        "the same shape; name it in train.init_skip to initialise it fresh (e.g. --set "
        "\"train.init_skip=['affine2']\")"
    )
    assert net.buffer.data.tobytes() == before.tobytes()  # nothing copied
    with pytest.raises(ValueError, match="SRC: has no affine3.W \\(shape \\(32, 10\\) here\\)"):
        copy_by_name(source, net, ["affine2"], "SRC")
    assert copy_by_name(source, net, ["affine2", "affine3"], "SRC") == (
        2,
        ["affine2.W", "affine2.b", "affine3.W", "affine3.b"],
    )
    np.testing.assert_array_equal(net.params["affine1.W"], source.params["affine1.W"])
    np.testing.assert_array_equal(net.params["affine3.W"], before[-320 - 10 : -10].reshape(32, 10))
    with pytest.raises(ValueError, match="^config key train.init_skip: 'conv' matches no param"):
        copy_by_name(source, net, ["conv"], "SRC")


@pytest.mark.parametrize(
    "settings, message",
    [
        (["train.init_skip=['affine2']"], "config key train.init_skip: got ['affine2'] without"),
        (["train.freeze=['conv1', '']"], "config key train.freeze: got ['conv1', '']; expected"),
        (["train.freeze=[1]"], "config key train.freeze: got [1]; expected a list of"),
        (["data.train_limit=-10"], "config key data.train_limit: got -10; expected a value >= 0"),
    ],
)
def test_transfer_keys_are_checked_with_the_config(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[")):
        load_config(None, settings)


def _train(mnist_h5, run_dir, *settings, ckpt=None):
    cfg = load_config(None, [*MLP, f"data.path='{mnist_h5}'", *settings])
    return train(cfg, LocalComm(), run_dir, ckpt)


def test_init_from_starts_from_the_source_and_the_frozen_part_stays_bitwise(
    mnist_h5, checkpoint, tmp_path
):
    source = read(checkpoint)
    settings = [f"train.init_from='{checkpoint}'", "train.freeze=['affine1']"]
    _, net = _train(mnist_h5, tmp_path / "run", *settings, "train.max_steps=1")
    for name in ("affine1.W", "affine1.b"):
        assert net.params[name].tobytes() == source.params[name].tobytes(), name
    lr = 0.001  # one Adam step moves each entry by about lr at most
    for name in ("affine2.W", "affine2.b"):
        change = np.abs(net.params[name] - source.params[name])
        assert 0 < change.max() <= 1.01 * lr, name
    saved = read(tmp_path / "run")
    assert saved.meta["init_from"] == str(checkpoint.resolve())
    assert saved.meta["init_from_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert saved.optimizer["iter"] == 1  # the optimizer started fresh
    assert not saved.optimizer["m"][: 784 * 64 + 64].any()


def test_a_resumed_run_keeps_its_source_record_without_reading_the_source(
    mnist_h5, checkpoint, tmp_path
):
    copy = tmp_path / "source.h5"
    copy.write_bytes(checkpoint.read_bytes())
    settings = [f"train.init_from='{copy}'", "train.freeze=['affine1']", "train.max_steps=20"]
    straight, _ = _train(mnist_h5, tmp_path / "a", *settings)
    stopped, _ = _train(mnist_h5, tmp_path / "b", *settings, "train.stop_after=7")
    assert stopped["steps"] == 7
    digest = read(tmp_path / "b").meta["init_from_sha256"]
    copy.unlink()  # a resume restores everything from its own checkpoint
    resumed, _ = _train(mnist_h5, tmp_path / "b", *settings, ckpt=find_resume(tmp_path / "b"))
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert read(tmp_path / "b").meta["init_from_sha256"] == digest
