"""Whole-network gradient checks, the spec contract, buffer aliasing and determinism."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numerics import affine_relu_logit_bound, ambiguous_samples, mean_loss_bound, unit_roundoff

from mpinet.model import build
from mpinet.model.gradient import relative_error
from mpinet.model.optimizers import create

SPECS = {
    "mlp_relu": {"name": "mlp", "hidden": [10, 8], "input_shape": [1, 4, 4]},
    "mlp_sigmoid_xavier": {
        "name": "mlp",
        "hidden": [10, 8],
        "activation": "sigmoid",
        "init": "xavier",
        "input_shape": [1, 4, 4],
    },
    "mlp_tanh_decay": {
        "name": "mlp",
        "hidden": [7],
        "activation": "tanh",
        "weight_decay": 0.1,
        "input_shape": [1, 4, 4],
    },
    "mlp_bn_dropout": {
        "name": "mlp",
        "hidden": [10, 8],
        "batchnorm": True,
        "dropout": 0.3,
        "input_shape": [1, 4, 4],
    },
    "simple_cnn": {
        "name": "simple_cnn",
        "filters": 3,
        "filter_size": 3,
        "hidden": 6,
        "init": 0.3,
        "input_shape": [1, 8, 8],
    },
    "simple_cnn_bn_pad": {
        "name": "simple_cnn",
        "filters": 3,
        "filter_size": 3,
        "pad": 1,
        "hidden": 6,
        "batchnorm": True,
        "input_shape": [2, 6, 6],
    },
    "deep_cnn": {
        "name": "deep_cnn",
        "filters": [2, 2, 3, 3, 4, 4],
        "hidden": 5,
        "input_shape": [1, 12, 12],
    },
    "deep_cnn_bn_decay": {
        "name": "deep_cnn",
        "filters": [2, 2, 3, 3, 4, 4],
        "hidden": 5,
        "batchnorm": True,
        "weight_decay": 0.01,
        "dropout": 0.0,
        "input_shape": [1, 12, 12],
    },
    # chapter 8's nets (tests/model/test_blocks.py checks their blocks one by one)
    "vgg": {
        "name": "vgg",
        "filters": [2, 3],
        "hidden": 5,
        "dropout": 0.0,
        "input_shape": [1, 8, 8],
    },
    "vgg_no_bn_decay": {  # conv - relu - pool fused
        "name": "vgg",
        "filters": [2, 3],
        "convs": 1,
        "hidden": 5,
        "batchnorm": False,
        "weight_decay": 0.01,
        "dropout": 0.0,
        "input_shape": [1, 8, 8],
    },
    "googlenet": {
        "name": "googlenet",
        "stem": 3,
        "inception": [[2, 2, 3, 1, 2, 2], [2, 1, 2, 1, 2, 1]],
        "pool_after": [1],
        "dropout": 0.0,
        "input_shape": [1, 8, 8],
    },
    "googlenet_double_3x3_bn": {
        "name": "googlenet",
        "stem": 3,
        "inception": [[2, 2, 3, 1, 2, 2]],
        "pool_after": [],
        "double_3x3": True,
        "batchnorm": True,
        "dropout": 0.0,
        "input_shape": [1, 8, 8],
    },
    "resnet": {
        "name": "resnet",
        "channels": [2, 3, 4],
        "blocks": [1, 2, 1],
        "input_shape": [1, 8, 8],
    },
    "resnet_no_bn": {
        "name": "resnet",
        "channels": [2, 3],
        "blocks": [2, 1],
        "batchnorm": False,
        "input_shape": [1, 8, 8],
    },
}


def _sampled_check(net, x, t, samples=6, h=1e-6):
    """Compare backprop with central differences on a few elements of every parameter.

    h = 1e-6 (not the book's 1e-4): ReLU + max pooling are piecewise linear, and a smaller
    step is less likely to cross a kink; float64 keeps the rounding error near 1e-10.
    """

    def loss():
        net.dropout_rng.bit_generator.state = rng_state  # the same dropout masks every time
        return net.loss(x, t)

    rng_state = net.dropout_rng.bit_generator.state
    loss()
    net.backward()
    pick = np.random.default_rng(0)
    for name, p in net.params.items():
        analytic = net.grads[name].copy()
        flat = p.reshape(-1)
        for i in pick.choice(flat.size, min(samples, flat.size), replace=False):
            saved = flat[i]
            flat[i] = saved + h
            f1 = loss()
            flat[i] = saved - h
            f2 = loss()
            flat[i] = saved
            numeric = (f1 - f2) / (2 * h)
            a = analytic.reshape(-1)[i]
            assert np.isclose(a, numeric, rtol=1e-4, atol=1e-6), (
                f"{name}[{i}]: backprop {a!r} vs numerical {numeric!r} "
                f"(relative error {relative_error(a, numeric):.3g})"
            )


@pytest.mark.numerics
@pytest.mark.parametrize("key", sorted(SPECS))
def test_network_gradient_check(key):
    net = build(SPECS[key], dtype="float64", seed=3)
    c, h, w = net.spec["input_shape"]
    rng = np.random.default_rng(1)
    for name, p in net.params.items():  # zero biases put ReLU inputs exactly on the kink
        if not name.endswith(".W"):
            p += rng.normal(0, 0.1, p.shape)
    x, t = rng.random((4, c * h * w)), rng.integers(0, 10, 4)
    _sampled_check(net, x, t)


def test_book_architectures_and_shapes():
    deep = build({"name": "deep_cnn"})
    assert [n for n in deep.params if n.endswith(".W")] == [
        "conv1.W",
        "conv2.W",
        "conv3.W",
        "conv4.W",
        "conv5.W",
        "conv6.W",
        "affine1.W",
        "affine2.W",
    ]
    assert deep.params["conv1.W"].shape == (16, 1, 3, 3)
    assert deep.params["affine1.W"].shape == (64 * 4 * 4, 50)  # conv4 padded by 2, as the book
    simple = build({"name": "simple_cnn"})
    assert simple.params["conv1.W"].shape == (30, 1, 5, 5)
    assert simple.params["affine1.W"].shape == (30 * 12 * 12, 100)
    assert np.std(simple.params["affine1.W"]) == pytest.approx(0.01, rel=0.02)  # book's std
    mlp = build({"name": "mlp", "hidden": [100, 50]})
    assert [p.shape for p in mlp.params.values()] == [
        (784, 100),
        (100,),
        (100, 50),
        (50,),
        (50, 10),
        (10,),
    ]
    assert np.std(mlp.params["affine1.W"]) == pytest.approx(np.sqrt(2 / 784), rel=0.02)


def test_unknown_spec_key_names_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"model.hiden: not a key .*hidden.* did you mean "
        r"model.hidden\?",
    ):
        build({"name": "mlp", "hiden": [10]})
    with pytest.raises(ValueError, match="model.name: got 'alexnet'; expected one of mlp"):
        build({"name": "alexnet"})


@pytest.mark.parametrize("name", ["mlp", "simple_cnn", "deep_cnn"])
def test_views_share_the_buffer_after_a_training_step(name):
    spec = {"name": name, "batchnorm": True}
    net = build(spec)
    opt = create("adam", lr=1e-3)
    rng = np.random.default_rng(0)
    x, t = rng.random((8, 784), dtype=np.float32), rng.integers(0, 10, 8)
    before = net.buffer.data.copy()
    net.loss(x, t)
    net.backward()
    opt.update(net.buffer.data, net.buffer.grad)
    assert not np.array_equal(before, net.buffer.data)
    assert net.buffer.shares_memory()
    for layer in net.layers.values():
        for attr in ("W", "b", "gamma", "beta", "running_mean", "running_var"):
            if hasattr(layer, attr):
                buf = net.state.data if attr.startswith("running") else net.buffer.data
                assert np.shares_memory(getattr(layer, attr), buf), (layer, attr)
        for attr in ("dW", "db", "dgamma", "dbeta"):
            if hasattr(layer, attr):
                assert np.shares_memory(getattr(layer, attr), net.buffer.grad), (layer, attr)
    assert net.buffer.data.dtype == np.float32 and net.buffer.grad.dtype == np.float32


LAYOUT_SCRIPT = (
    "from mpinet.model import build; "
    "print(build({'name': 'deep_cnn', 'batchnorm': True}).buffer.layout())"
)


def test_layout_is_identical_across_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", LAYOUT_SCRIPT],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        outputs.add(out)
    assert len(outputs) == 1 and "conv1.W" in outputs.pop()


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["mlp", "simple_cnn"])
def test_fixed_seed_gives_a_bitwise_identical_loss_sequence(name):
    def run():
        net = build({"name": name, "dropout": 0.2}, seed=5)
        opt = create("momentum", lr=0.05)
        rng = np.random.default_rng(9)
        losses = []
        for _ in range(4):
            x, t = rng.random((16, 784), dtype=np.float32), rng.integers(0, 10, 16)
            losses.append(net.loss(x, t))
            net.backward()
            opt.update(net.buffer.data, net.buffer.grad)
        return losses, net.buffer.data.copy()

    (l1, p1), (l2, p2) = run(), run()
    assert l1 == l2 and np.array_equal(p1, p2)


def test_float32_network_never_computes_in_float64():
    net = build({"name": "simple_cnn", "batchnorm": True, "dropout": 0.1})
    x = np.random.default_rng(0).random((4, 1, 28, 28))  # float64 input is cast once
    out = net.forward(x)
    assert out.dtype == np.float32
    net.loss(x, np.zeros(4, np.int64))
    net.backward()
    assert net.buffer.grad.dtype == np.float32


@pytest.mark.numerics
def test_predict_accuracy_and_evaluate_agree():
    net = build({"name": "mlp", "hidden": [20]}, seed=1)
    rng = np.random.default_rng(2)
    x, t = rng.random((250, 784), dtype=np.float32), rng.integers(0, 10, 250)
    y = net.predict(x, batch_size=64)
    assert y.shape == (250, 10)
    # Other batch sizes may round float32 logits differently (tests/numerics.py): a label
    # may change only where the top two logits are that close; the losses within the bound.
    layers = [
        (
            net.params[f"affine{i}.W"].astype(np.float64),
            net.params[f"affine{i}.b"].astype(np.float64),
        )
        for i in (1, 2)
    ]
    logit_bound = affine_relu_logit_bound(layers, x, np.float32)
    flips = ambiguous_samples(y.astype(np.float64), logit_bound)
    correct = int(np.sum(y.argmax(1) == t))
    assert abs(net.accuracy(x, t, batch_size=100) * 250 - correct) <= flips
    loss_sum, evaluated, n = net.evaluate(x, t, batch_size=7)
    assert n == 250 and abs(evaluated - correct) <= flips
    assert abs(loss_sum / n - net.loss(x, t, train=False)) <= mean_loss_bound(logit_bound)
    # 10 float32 probabilities, each within a few roundings: their sum within 10 * 4u of 1.
    np.testing.assert_allclose(
        net.predict_proba(x).sum(1), 1, rtol=0, atol=40 * unit_roundoff(np.float32)
    )


def test_a_small_mlp_learns():
    rng = np.random.default_rng(0)
    x = rng.random((200, 784), dtype=np.float32)
    t = (x[:, :392].sum(1) > x[:, 392:].sum(1)).astype(np.int64)  # a learnable rule
    net = build({"name": "mlp", "hidden": [32]}, seed=0)
    opt = create("adam", lr=0.01)
    first = net.loss(x, t)
    for _ in range(60):
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    assert net.loss(x, t) < 0.3 * first
    assert net.accuracy(x, t) > 0.95


def test_build_substitutes_the_fused_layer_visibly_in_the_plan():
    """build() runs the book's plan through fuse_convolutions and Network takes the result as
    it is; fuse=False trains the book's Convolution -> Relu -> Pooling."""
    from mpinet.model import fuse_convolutions
    from mpinet.model.builders import PLANS
    from mpinet.model.spec import resolve_spec

    spec = resolve_spec({"name": "deep_cnn"})
    book_plan = PLANS["deep_cnn"](spec)
    net, book = build(spec), build(spec, fuse=False)
    assert net.plan == fuse_convolutions(book_plan) and book.plan == book_plan
    assert [(name, type(layer).__name__) for name, layer in net.layers.items()][:4] == [
        ("to_nhwc", "ToNHWC"),
        ("conv1", "FusedConvolution"),
        ("conv2", "FusedConvolution"),
        ("conv3", "FusedConvolution"),
    ]
    pooled = [name for name, kind, attrs in net.plan if kind == "fused_conv" and attrs["pool"]]
    assert pooled == ["conv2", "conv4", "conv6"]
    assert all(attrs["relu"] for _, kind, attrs in net.plan if kind == "fused_conv")
    assert [type(book.layers[name]).__name__ for name in ("conv2", "relu_conv2", "pool1")] == [
        "Convolution",
        "Relu",
        "Pooling",
    ]
    assert net.buffer.layout() == book.buffer.layout()  # the same checkpoints either way
    assert np.array_equal(net.buffer.data, book.buffer.data)


def test_batchnorm_keeps_pool_and_relu_apart_and_pools_before_the_relu():
    plan = build({"name": "simple_cnn", "batchnorm": True}).plan
    assert [kind for _, kind, _ in plan[:5]] == ["to_nhwc", "fused_conv", "bn", "pool", "relu"]
    assert not plan[1][2]["pool"] and not plan[1][2]["relu"]


@pytest.mark.parametrize("name", ["mlp", "simple_cnn", "deep_cnn", "vgg", "googlenet", "resnet"])
@pytest.mark.parametrize("fuse", [True, False])
def test_only_the_first_layer_skips_its_input_gradient(name, fuse):
    from mpinet.model.blocks import leaves

    net = build({"name": name}, fuse=fuse)
    skipping = [n for n, layer in net.layers.items() if getattr(layer, "need_dx", True) is False]
    assert skipping == ["affine1" if name == "mlp" else "conv1"]
    inside = [layer for layer in leaves(net.layers) if getattr(layer, "need_dx", True) is False]
    assert inside == [net.layers[skipping[0]]]  # no layer inside a block skips it


def test_model_names_input_layout_and_the_books_class_names():
    from mpinet.model import (
        MODEL_NAMES,
        DeepConvNet,
        MultiLayerNetExtend,
        SimpleConvNet,
        input_layout,
    )
    from mpinet.model.builders import PLANS

    assert tuple(PLANS) == MODEL_NAMES
    assert MODEL_NAMES == ("mlp", "simple_cnn", "deep_cnn", "vgg", "googlenet", "resnet")
    layouts = {name: "image" for name in MODEL_NAMES} | {"mlp": "flat"}
    for name in MODEL_NAMES:
        assert input_layout({"name": name}) == input_layout(name) == layouts[name]
        assert build(name).input_layout == layouts[name]
    for book_net, spec in (
        (MultiLayerNetExtend(hidden=[20], seed=2), {"name": "mlp", "hidden": [20]}),
        (SimpleConvNet(filters=4, seed=2), {"name": "simple_cnn", "filters": 4}),
        (DeepConvNet(dropout=0.0, seed=2), {"name": "deep_cnn", "dropout": 0.0}),
    ):
        net = build(spec, seed=2)
        assert book_net.plan == net.plan and book_net.spec == net.spec
        assert np.array_equal(book_net.buffer.data, net.buffer.data)


def test_evaluate_computes_through_the_networks_own_loss_layer():
    """An mse net's evaluate sums its mean squared errors, not a softmax loss."""
    from mpinet.model.layers import IdentityWithLoss

    net = build({"name": "mlp", "hidden": [5], "loss": "mse", "output_size": 2}, seed=1)
    rng = np.random.default_rng(0)
    x, t = rng.random((8, 784)), rng.random((8, 2))
    y = net.predict(x, batch_size=8)  # the same batch: the very same scores
    loss_sum, _, n = net.evaluate(x, t, batch_size=8)
    assert n == 8 and loss_sum == IdentityWithLoss().forward(y, t) * 8
