"""Checkpoints the inference tests share: small MLPs trained in-process on the real MNIST and
Fashion-MNIST, saved the way the training loop saves them (meta with the resolved config)."""

import h5py
import pytest

from mpinet.data import TrainBatches
from mpinet.data.prepare import prepare
from mpinet.model import build
from mpinet.model.checkpoint import save
from mpinet.model.optimizers import create
from mpinet.worker.config import load_config, model_spec, to_toml


def train_and_save(data_h5, out, overrides=(), steps=300):
    """An MLP (one hidden layer of 64) trained `steps` steps on `data_h5`, saved to `out`."""
    cfg = load_config(
        None, ["model.name='mlp'", "model.hidden=[64]", f"data.path='{data_h5}'", *overrides]
    )
    net, opt = build(model_spec(cfg), seed=0), create("adam", lr=0.003)
    batches = TrainBatches(
        data_h5, global_batch=100, rank=0, world_size=1, seed=0, shape="flat", prefetch=False
    )
    for _, (x, t) in zip(range(steps), batches.epoch(0), strict=False):
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    return save(out, net, opt, {"step": steps, "epoch": 0, "config": to_toml(cfg)})


@pytest.fixture(scope="session")
def checkpoint(mnist_h5, tmp_path_factory):
    """An MLP trained for 300 steps on MNIST (about 94% on the test set)."""
    return train_and_save(mnist_h5, tmp_path_factory.mktemp("run") / "ckpt-00000300.h5")


@pytest.fixture(scope="session")
def fashion_h5(shared_data, tmp_path_factory):
    """Fashion-MNIST prepared once per session from ../shared/data/fashion-mnist."""
    if not (shared_data / "fashion-mnist").is_dir():
        pytest.skip(f"the Fashion-MNIST files are missing: expected {shared_data}/fashion-mnist")
    out = tmp_path_factory.mktemp("fashion") / "fashion-mnist.h5"
    return prepare("fashion-mnist", source=shared_data / "fashion-mnist", out=out)


@pytest.fixture(scope="session")
def fashion_checkpoint(fashion_h5, tmp_path_factory):
    """An MLP trained for 300 steps on Fashion-MNIST (about 82% on its test set)."""
    return train_and_save(
        fashion_h5,
        tmp_path_factory.mktemp("fashion-run") / "ckpt-00000300.h5",
        ["data.dataset='fashion-mnist'"],
    )


@pytest.fixture(scope="session")
def test_digits(mnist_h5):
    """The first 12 MNIST test images (uint8) and their labels."""
    with h5py.File(mnist_h5, "r") as f:
        return f["test/images"][:12], f["test/labels"][:12]
