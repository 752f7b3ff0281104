"""Helpers for the checkpoint tests (importable as `checkpoint_support`, like support.py)."""

import json

import h5py
import numpy as np

from mpinet.model import build
from mpinet.model.checkpoint import rng_state
from mpinet.model.checkpoint.schema import meta_digest
from mpinet.model.optimizers import create

SPEC = {"name": "simple_cnn", "filters": 4, "hidden": 16, "batchnorm": True}


def trained(spec=SPEC, optimizer="adam", steps=2, seed=0):
    """A network and optimizer after a few real steps: every array holds something."""
    net = build(spec, seed=seed)
    opt = create(optimizer)
    rng = np.random.default_rng(seed)
    shape = (8, 784) if spec["name"] == "mlp" else (8, 1, 28, 28)
    for _ in range(steps):
        x = rng.random(shape, dtype=np.float32)
        net.loss(x, rng.integers(0, 10, 8))
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    return net, opt


def trainer_meta(world_size=4, step=600):
    """Every meta key the training loop stores, with values of the right kind."""
    rngs = [rng_state(np.random.default_rng((0, rank))) for rank in range(world_size)]
    return {
        "step": step,
        "epoch": 2,
        "world_size": world_size,
        "world_sizes": json.dumps([2, world_size]),
        "config": '[data]\ndataset = "mnist"\n[train]\nseed = 0\n',
        "dropout_rngs": "[" + ", ".join(rngs) + "]",
        "running": json.dumps([[12.5, 95, 100]] * world_size),
        "train_seconds": 3.25,
        "elapsed_seconds": 40.0,
        "total_steps": 1800,
        "data_fingerprint": "ab" * 32,
        "pixel_mean": 0.1307,
        "pixel_std": 0.3081,
        "test_accuracy": 0.9876,
    }


def edit(path, change, reseal=False):
    """Open `path` read-write and apply change(f). reseal=True then recomputes meta_sha256,
    as a consistent writer would: the file is wrong only in the way `change` made it."""
    with h5py.File(path, "r+") as f:
        change(f)
        if reseal:
            f.attrs["meta_sha256"] = meta_digest(f)
    return path
