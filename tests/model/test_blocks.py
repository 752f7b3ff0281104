"""Chapter 8's blocks and nets: gradient checks of the residual and Inception blocks and of
global average pooling, their parameters' names and order in the flat buffer, the fused
path inside blocks, the spec checks, float32, and a few real training steps on MNIST."""

import numpy as np
import pytest
from numerics import trajectory_tolerance
from threadpoolctl import threadpool_limits

from mpinet.data import TrainBatches
from mpinet.model import build, fuse_convolutions
from mpinet.model.blocks import leaves
from mpinet.model.chapter8 import _inception, _residual
from mpinet.model.cost import cost
from mpinet.model.gradient import numerical_gradient, relative_error
from mpinet.model.layers import GlobalAveragePooling
from mpinet.model.network import Network
from mpinet.model.optimizers import create

# The tolerances of tests/model/test_layers.py (DeZero's, for float64 central differences):
# the truncation error h**2 / 6 * |f'''| and the rounding error u * |f| / h (1e-10 at
# h = 1e-6) are far below them, while a wrong backward is off by O(1). h = 1e-6, as the
# whole-network checks: a block is piecewise linear (ReLU, max pooling), and a smaller step
# is less likely to cross a kink.
RTOL, ATOL, H = 1e-4, 1e-5, 1e-6

# (block kind, plan attrs, input channels): identity and projection shortcuts, with and
# without BatchNorm; Inception with 5x5 and with two 3x3, with and without BatchNorm.
BLOCKS = {
    "residual_identity": ("residual", _residual({"batchnorm": True}, 3, 3, 1), 3),
    "residual_identity_no_bn": ("residual", _residual({"batchnorm": False}, 3, 3, 1), 3),
    "residual_projection": ("residual", _residual({"batchnorm": True}, 3, 4, 2), 3),
    "residual_projection_no_bn": ("residual", _residual({"batchnorm": False}, 2, 4, 2), 2),
    "inception_5x5": (
        "inception",
        _inception({"batchnorm": False, "double_3x3": False}, 3, (2, 2, 3, 1, 2, 2))[0],
        3,
    ),
    "inception_double_3x3_bn": (
        "inception",
        _inception({"batchnorm": True, "double_3x3": True}, 2, (1, 2, 2, 1, 2, 1))[0],
        2,
    ),
}


def _assert_close(name, analytic, numeric):
    bad = ~np.isclose(analytic, numeric, rtol=RTOL, atol=ATOL)
    if bad.any():
        err = relative_error(analytic, numeric)
        i = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(
            f"{name}: worst relative error {err[i]:.3g} at {i}: "
            f"backprop {analytic[i]!r} vs numerical {numeric[i]!r}"
        )


def _block_net(key, fuse, dtype="float64"):
    """A one-block network (the block's parameters in a flat buffer) and its input channels."""
    kind, attrs, channels = BLOCKS[key]
    plan = [("block", kind, attrs)]
    net = Network(fuse_convolutions(plan) if fuse else plan, {"init": "he"}, dtype=dtype)
    rng = np.random.default_rng(5)
    for name, p in net.params.items():  # zero biases put ReLU inputs exactly on the kink
        if not name.endswith(".W"):
            p += rng.normal(0, 0.1, p.shape)
    return net, channels


@pytest.mark.numerics
@pytest.mark.parametrize("fuse", [False, True], ids=["book", "fused"])
@pytest.mark.parametrize("key", sorted(BLOCKS))
def test_block_gradients(key, fuse, rng):
    """dx and every parameter gradient of a block against central differences (float64)."""
    net, channels = _block_net(key, fuse)
    block = net.layers["block"]
    x = rng.standard_normal((2, 6, 6, channels))
    weights = rng.standard_normal(block.forward(x.copy()).shape)  # loss = sum(out * weights)

    def f():
        return float(np.sum(block.forward(x) * weights))

    f()
    dout = weights.copy()
    dx = block.backward(dout)
    assert np.array_equal(dout, weights), f"{key}: backward mutated dout"
    _assert_close(f"{key} dx", dx, numerical_gradient(f, x, h=H))
    for name, p in net.params.items():
        analytic = net.grads[name].copy()
        _assert_close(f"{key} d{name}", analytic, numerical_gradient(f, p, h=H))


@pytest.mark.numerics
def test_global_average_pooling_gradient(rng):
    layer, x = GlobalAveragePooling(), rng.standard_normal((3, 4, 5, 2))
    weights = rng.standard_normal((3, 2))

    def f():
        return float(np.sum(layer.forward(x) * weights))

    assert layer.forward(x).shape == (3, 2)
    np.testing.assert_allclose(layer.forward(x), x.mean(axis=(1, 2)))
    _assert_close("gap dx", layer.backward(weights.copy()), numerical_gradient(f, x))


@pytest.mark.parametrize("key", sorted(BLOCKS))
def test_blocks_keep_float32(key, rng):
    net, channels = _block_net(key, fuse=True, dtype="float32")
    block = net.layers["block"]
    out = block.forward(rng.random((2, 6, 6, channels), dtype=np.float32))
    assert out.dtype == np.float32
    assert block.backward(np.ones_like(out)).dtype == np.float32
    gap = GlobalAveragePooling()
    assert gap.forward(out).dtype == np.float32
    assert gap.backward(np.ones((2, out.shape[-1]), np.float32)).dtype == np.float32


@pytest.mark.parametrize("name", ["vgg", "googlenet", "resnet"])
def test_new_nets_compute_in_float32_and_keep_views_after_a_step(name):
    net = build(name)
    opt = create("adam", lr=1e-3)
    rng = np.random.default_rng(0)
    x, t = rng.random((4, 784), dtype=np.float32), rng.integers(0, 10, 4)
    assert net.forward(x).dtype == np.float32 and net.forward(x).shape == (4, 10)
    net.loss(x, t)
    net.backward()
    opt.update(net.buffer.data, net.buffer.grad)
    assert net.buffer.grad.dtype == np.float32 and net.buffer.shares_memory()
    for layer in leaves(net.layers):  # the layers inside blocks hold buffer views too
        for attr, buf in (("W", net.buffer.data), ("dW", net.buffer.grad)):
            if hasattr(layer, attr):
                assert np.shares_memory(getattr(layer, attr), buf), (layer, attr)
        if hasattr(layer, "running_mean"):
            assert np.shares_memory(layer.running_mean, net.state.data)


def test_parameters_are_named_in_construction_order():
    net = build({"name": "resnet", "channels": [2, 3], "blocks": [1, 1]})
    layers = [n.rsplit(".", 1)[0] for n in net.params if n.endswith((".W", ".gamma"))]
    assert layers == [
        "conv1",
        "bn_conv1",
        "block1.conv1",  # identity shortcut: 2 -> 2 channels, stride 1
        "block1.bn_conv1",
        "block1.conv2",
        "block1.bn_conv2",
        "block2.conv1",  # stride 2, 2 -> 3 channels: a 1x1 projection after the body
        "block2.bn_conv1",
        "block2.conv2",
        "block2.bn_conv2",
        "block2.proj",
        "block2.bn_proj",
        "affine1",
    ]
    assert net.params["block2.proj.W"].shape == (3, 2, 1, 1)
    assert list(net.state.params)[-2:] == [
        "block2.bn_proj.running_mean",
        "block2.bn_proj.running_var",
    ]
    inception = [n for n in build("googlenet").params if n.startswith("inception1.")]
    assert inception[:4] == [
        "inception1.branch1.conv.W",
        "inception1.branch1.conv.b",
        "inception1.branch1.bn_conv.gamma",
        "inception1.branch1.bn_conv.beta",
    ]
    assert [n.split(".", 1)[1] for n in inception if n.endswith(".W")] == [
        "branch1.conv.W",
        "branch2.reduce.W",
        "branch2.conv.W",
        "branch3.reduce.W",
        "branch3.conv.W",
        "branch4.conv.W",
    ]


def test_fused_path_inside_blocks():
    """Each conv in a block is a fused_conv: with its ReLU where no BatchNorm is between."""
    resnet = {name: attrs for name, _, attrs in build("resnet").plan}
    body = resnet["block1"]["body"]
    assert [kind for _, kind, _ in body] == ["fused_conv", "bn", "relu", "fused_conv", "bn"]
    assert resnet["block1"]["shortcut"] == []  # the identity
    assert resnet["block2"]["shortcut"][0][1] == "fused_conv"  # the 1x1 projection
    googlenet = build({"name": "googlenet", "batchnorm": False}).plan
    assert googlenet[1][2]["pool"] and googlenet[1][2]["relu"]  # the stem: conv-relu-pool
    branches = googlenet[2][2]["branches"]
    assert [[kind for _, kind, _ in b] for b in branches] == [
        ["fused_conv"],
        ["fused_conv", "fused_conv"],
        ["fused_conv", "fused_conv"],
        ["pool", "fused_conv"],  # 3x3 stride 1 pooling stays a Pooling layer
    ]
    assert all(a["relu"] and not a["pool"] for b in branches for _, k, a in b if k != "pool")
    vgg = build({"name": "vgg", "batchnorm": False}).plan
    pooled = [name for name, kind, a in vgg if kind == "fused_conv" and a["pool"]]
    assert pooled == ["conv2", "conv4", "conv6"]


SMALL = {
    "vgg": {"name": "vgg", "filters": [2, 3], "hidden": 5, "dropout": 0.0},
    "googlenet": {
        "name": "googlenet",
        "stem": 3,
        "inception": [[2, 2, 3, 1, 2, 2], [2, 1, 2, 1, 2, 1]],
        "pool_after": [1],
        "dropout": 0.0,
    },
    "resnet": {"name": "resnet", "channels": [2, 3, 3], "blocks": [1, 2, 1]},
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", sorted(SMALL))
def test_fused_net_equals_the_book_net(name):
    """The same parameters bit for bit, the same loss and gradients up to reordered float64
    sums: numerics.trajectory_tolerance(1) allows for the BatchNorm's division by small
    batch deviations (its factor 1000). It is relative to the largest gradient of the net:
    a conv bias before BatchNorm has gradient 0 exactly, computed as rounding noise of that
    scale; a wrong fused path is off by O(1) of its own tensor (at 1e-4 of the largest or
    more, here), a million times the tolerance."""
    spec = {**SMALL[name], "input_shape": [1, 12, 12]}
    fused, book = (build(spec, dtype="float64", seed=3, fuse=f) for f in (True, False))
    assert np.array_equal(fused.buffer.data, book.buffer.data)
    rng = np.random.default_rng(4)
    x, t = rng.random((6, 144)), rng.integers(0, 10, 6)
    tol = trajectory_tolerance(1)
    assert abs(fused.loss(x, t) - book.loss(x, t)) <= tol * abs(book.loss(x, t))
    fused.backward()
    book.backward()
    scale = np.abs(book.buffer.grad).max()
    for key, g in book.grads.items():
        assert np.abs(fused.grads[key] - g).max() <= tol * scale, key


def test_spec_checks_name_the_key():
    cases = [
        ({"name": "vgg", "filters": [16, 0]}, "model.filters: got [16, 0]; expected for vgg"),
        ({"name": "vgg", "convs": 0}, "model.convs: got 0; expected for vgg: a whole number"),
        ({"name": "vgg", "filters": [2] * 6}, "model.filters: got [2, 2, 2, 2, 2, 2]; expected at"),
        ({"name": "googlenet", "stem": 2.5}, "model.stem: got 2.5"),
        ({"name": "googlenet", "inception": [[1, 2, 3]]}, "model.inception: got [[1, 2, 3]]"),
        ({"name": "googlenet", "pool_after": [4]}, "model.pool_after: got [4]; expected block"),
        ({"name": "googlenet", "double_3x3": 1}, "model.double_3x3: got 1; expected for"),
        ({"name": "resnet", "channels": []}, "model.channels: got []; expected for resnet"),
        ({"name": "resnet", "blocks": [1, 1]}, "model.blocks: got [1, 1]; expected one count"),
        ({"name": "resnet", "filters": [1]}, "model.filters: not a key of model 'resnet'"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError) as error:
            build(spec)
        assert str(error.value).startswith(message), str(error.value)
        assert "\n" not in str(error.value)


def test_cost_counts_parameters_and_multiply_adds():
    """deep_cnn by hand: conv k's output pixels x C*3*3 x FN, then the two affines."""
    convs = [(28, 1, 16), (28, 16, 16), (14, 16, 32), (16, 32, 32), (8, 32, 64), (8, 64, 64)]
    macs = sum(hw * hw * c * 9 * fn for hw, c, fn in convs) + 64 * 4 * 4 * 50 + 50 * 10
    assert cost("deep_cnn") == (build("deep_cnn").buffer.size, macs)
    # README's "Chapter 8 networks" table
    assert cost("vgg") == (147_642, 7_413_248)
    assert cost("googlenet") == (47_134, 5_322_912)
    assert cost("resnet") == (78_090, 9_345_920)


@pytest.mark.parametrize("name", ["vgg", "googlenet", "resnet"])
def test_new_nets_learn_real_mnist_in_a_few_steps(mnist_h5, name):
    """The default nets (BatchNorm, dropout as shipped), Adam, 30 steps of 50 real images:
    the mean loss of the last 5 batches is 0.3 below that of the first 5, about four times
    the spread of such a mean (a batch loss varies by ~0.15 from batch to batch here)."""
    batches = TrainBatches(
        mnist_h5, global_batch=50, rank=0, world_size=1, seed=0, shape="image", prefetch=False
    )
    net, opt = build(name, seed=0), create("adam", lr=2e-3)
    losses = []
    with threadpool_limits(1, user_api="blas"):  # 2 threads on a loaded machine: 5-17x slower
        for _, (x, t) in zip(range(30), batches.epoch(0), strict=False):
            losses.append(net.loss(x, t))
            net.backward()
            opt.update(net.buffer.data, net.buffer.grad)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
