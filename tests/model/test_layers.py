"""Gradient checks (float64, central difference) for every layer: inputs and parameters."""

import numpy as np
import pytest
from numerics import sum_bound

from mpinet.model.conv import Convolution
from mpinet.model.fused_conv import FusedConvolution
from mpinet.model.gradient import numerical_gradient, relative_error
from mpinet.model.layers import (
    AddLayer,
    Affine,
    BatchNormalization,
    Dropout,
    Flatten,
    IdentityWithLoss,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    ToNHWC,
)
from mpinet.model.pooling import Pooling

pytestmark = pytest.mark.numerics  # run again under another BLAS kernel (.ci/run)

# DeZero's tolerances for float64 central differences (h = 1e-4): the truncation error is
# h**2 / 6 * |f'''| ~ 1e-9 and the rounding error u * |f| / h ~ 1e-12, both far below these,
# while a wrong backward is off by O(1): no machine's rounding comes near the line.
RTOL, ATOL = 1e-4, 1e-5


def _assert_close(name, analytic, numeric):
    bad = ~np.isclose(analytic, numeric, rtol=RTOL, atol=ATOL)
    if bad.any():
        err = relative_error(analytic, numeric)
        i = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(
            f"{name}: worst relative error {err[i]:.3g} at {i}: "
            f"backprop {analytic[i]!r} vs numerical {numeric[i]!r}"
        )


def _params(shapes, rng):
    """Trainable arrays and their gradient arrays, as a network would inject them."""
    p = {k: rng.standard_normal(s) for k, s in shapes.items()}
    g = {k: np.zeros(s) for k, s in shapes.items()}
    return p, g


def _make(kind, rng):
    """(layer, input, parameter dict, gradient dict) for one layer kind."""
    if kind == "affine":
        p, g = _params({"W": (6, 4), "b": (4,)}, rng)
        return Affine(p["W"], p["b"], g["W"], g["b"]), rng.standard_normal((5, 6)), p, g
    if kind == "affine_4d":  # the book's Affine flattens (N, C, H, W) input
        p, g = _params({"W": (12, 3), "b": (3,)}, rng)
        return Affine(p["W"], p["b"], g["W"], g["b"]), rng.standard_normal((2, 3, 2, 2)), p, g
    if "conv" in kind:  # the book's Convolution, and the network's FusedConvolution
        stride, pad = {"conv": (1, 0), "pad": (1, 1), "stride": (2, 1), "pad2": (1, 2)}[
            kind.split("_")[-1]
        ]
        layer_class = FusedConvolution if kind.startswith("fused") else Convolution
        p, g = _params({"W": (3, 2, 3, 3), "b": (3,)}, rng)
        layer = layer_class(p["W"], p["b"], g["W"], g["b"], stride=stride, pad=pad)
        return layer, rng.standard_normal((2, 7, 6, 2)), p, g
    if kind.startswith("bn"):
        p, g = _params({"gamma": (4,), "beta": (4,)}, rng)
        layer = BatchNormalization(
            p["gamma"], p["beta"], g["gamma"], g["beta"], np.zeros(4), np.ones(4)
        )
        x = rng.standard_normal((6, 4) if kind == "bn" else (2, 3, 3, 4))
        return layer, x, p, g
    if kind.startswith("pool"):
        size, stride, pad = {"pool": (2, 2, 0), "pool_overlap": (3, 1, 0), "pool_pad": (2, 2, 1)}[
            kind
        ]
        # distinct values: the max must not sit on a tie for a finite difference to be valid
        x = rng.permutation(2 * 6 * 6 * 3).reshape(2, 6, 6, 3) / 10.0
        return Pooling(size, size, stride, pad), x, {}, {}
    layer = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh, "flatten": Flatten}.get(kind)
    if layer is not None:
        x = rng.standard_normal((4, 3, 2, 5))
        if kind == "relu":
            x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
        return layer(), x, {}, {}
    if kind == "to_nhwc":
        return ToNHWC((2, 3, 4)), rng.standard_normal((3, 24)), {}, {}
    raise KeyError(kind)


KINDS = [
    "affine",
    "affine_4d",
    "conv",
    "conv_pad",
    "conv_stride",
    "conv_pad2",
    "fused_conv",
    "fused_conv_pad",
    "fused_conv_stride",
    "fused_conv_pad2",
    "bn",
    "bn_4d",
    "pool",
    "pool_overlap",
    "pool_pad",
    "relu",
    "sigmoid",
    "tanh",
    "flatten",
    "to_nhwc",
]


@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradients(kind, rng):
    layer, x, params, grads = _make(kind, rng)
    weights = rng.standard_normal(layer.forward(x.copy()).shape)  # loss = sum(out * weights)

    def f():
        return float(np.sum(layer.forward(x) * weights))

    f()
    dout = weights.copy()
    dx = layer.backward(dout)
    assert np.array_equal(dout, weights), f"{kind}: backward mutated dout"
    _assert_close(f"{kind} dx", dx, numerical_gradient(f, x))
    for name in params:
        analytic = grads[name].copy()
        _assert_close(f"{kind} d{name}", analytic, numerical_gradient(f, params[name]))


@pytest.mark.parametrize(
    "kind", ["conv", "conv_stride", "fused_conv", "affine", "bn_4d", "pool", "relu"]
)
def test_layers_keep_float32(kind, rng):
    layer, x, params, grads = _make(kind, rng)
    for name in params:  # a float32 network hands float32 views to its layers
        params[name] = params[name].astype(np.float32)
    layer2, *_ = _make(kind, rng)
    for name, value in params.items():
        setattr(layer2, name, value)
    for name, value in grads.items():
        setattr(layer2, "d" + name, value.astype(np.float32))
    out = layer2.forward(x.astype(np.float32))
    assert out.dtype == np.float32
    assert layer2.backward(np.ones_like(out)).dtype == np.float32


def _conv_reference(x, W, b, stride, pad):
    """Direct loops over NCHW, the definition of the book's convolution."""
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    out = np.zeros((N, FN, OH, OW))
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * stride : i * stride + FH, j * stride : j * stride + FW]
            out[:, :, i, j] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


@pytest.mark.parametrize("layer_class", [Convolution, FusedConvolution])
@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (1, 2), (3, 0)])
def test_convolution_matches_direct_loops(layer_class, stride, pad, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    conv = layer_class(W, b, np.zeros_like(W), np.zeros_like(b), stride=stride, pad=pad)
    out = conv.forward(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    # Two orders of the same C*FH*FW + 1 = 28-term sums (tests/numerics.py).
    atol = sum_bound(28, np.abs(x).max() * max(np.abs(W).max(), np.abs(b).max()), np.float64)
    np.testing.assert_allclose(out, _conv_reference(x, W, b, stride, pad), rtol=0, atol=atol)


def test_pooling_routes_ties_to_the_first_maximum():
    x = np.zeros((1, 2, 2, 1))  # one window, all four values tied
    pool = Pooling(2, 2, stride=2)
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 1, 1)))
    assert dx.sum() == 1 and dx[0, 0, 0, 0] == 1


def test_relu_does_not_mutate_dout(rng):
    relu = Relu()
    relu.forward(rng.standard_normal((3, 4)))
    dout = np.ones((3, 4))
    relu.backward(dout)
    assert np.all(dout == 1)


@pytest.mark.parametrize("onehot", [False, True])
def test_softmax_with_loss_gradient(onehot, rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    labels = np.eye(4)[t] if onehot else t
    layer = SoftmaxWithLoss()
    layer.forward(x, labels)
    dx = layer.backward()
    _assert_close("softmax dx", dx, numerical_gradient(lambda: layer.forward(x, labels), x))


def test_softmax_with_loss_is_stable_for_huge_scores():
    x = np.array([[1000.0, 0.0, -1000.0]])
    assert SoftmaxWithLoss().forward(x, np.array([0])) == pytest.approx(0.0)
    assert np.isfinite(SoftmaxWithLoss().forward(x, np.array([2])))


def test_identity_with_loss_gradient(rng):
    x, t = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    layer = IdentityWithLoss()
    assert layer.forward(x, t) == pytest.approx(0.5 * np.sum((x - t) ** 2) / 5)
    dx = layer.backward()
    _assert_close("mse dx", dx, numerical_gradient(lambda: layer.forward(x, t), x))


def test_dropout_fixed_mask_gradient(rng):
    x = rng.standard_normal((6, 5))
    layer = Dropout(0.5, None)

    def f():
        layer.rng = np.random.default_rng(7)  # the same mask on every forward
        return float(np.sum(layer.forward(x) * np.arange(30).reshape(6, 5)))

    f()
    dx = layer.backward(np.arange(30.0).reshape(6, 5))
    _assert_close("dropout dx", dx, numerical_gradient(f, x))


def test_dropout_is_inverted_and_off_in_eval(rng):
    layer = Dropout(0.25, np.random.default_rng(0))
    x = np.ones((200, 200), np.float32)
    out = layer.forward(x)
    assert out.dtype == np.float32
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert abs(out.mean() - 1) < 0.02  # the expectation is unchanged
    assert layer.forward(x, train=False) is x


def test_batchnorm_running_statistics_and_eval(rng):
    gamma, beta = np.ones(3), np.zeros(3)
    rm, rv = np.zeros(3), np.ones(3)
    bn = BatchNormalization(gamma, beta, np.zeros(3), np.zeros(3), rm, rv, momentum=0.0)
    x = rng.standard_normal((50, 3)) * 2 + 5
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(rm, x.mean(0))  # momentum 0: running = batch statistics
    np.testing.assert_allclose(bn.forward(x, train=False), out, atol=1e-4)


def test_batchnorm_with_identity_allreduce_equals_local(rng):
    x = rng.standard_normal((8, 3))
    local = BatchNormalization(
        np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), np.ones(3)
    )
    synced = BatchNormalization(
        np.ones(3),
        np.zeros(3),
        np.zeros(3),
        np.zeros(3),
        np.zeros(3),
        np.ones(3),
        allreduce=lambda a: a,
    )
    np.testing.assert_allclose(local.forward(x), synced.forward(x), atol=1e-12)
    d = rng.standard_normal((8, 3))
    np.testing.assert_allclose(local.backward(d), synced.backward(d), atol=1e-12)


def test_mul_and_add_layers_follow_the_book():
    apple, num, tax = 100, 2, 1.1
    mul_apple, mul_tax = MulLayer(), MulLayer()
    price = mul_tax.forward(mul_apple.forward(apple, num), tax)
    assert price == pytest.approx(220.0)
    dprice_apple, dtax = mul_tax.backward(1)
    dapple, dnum = mul_apple.backward(dprice_apple)
    assert (dapple, dnum, dtax) == pytest.approx((2.2, 110, 200))
    assert AddLayer().forward(1, 2) == 3 and AddLayer().backward(3) == (3, 3)


def test_affine_names_the_layer_on_a_shape_mismatch():
    layer = Affine(
        np.zeros((100, 10)), np.zeros(10), np.zeros((100, 10)), np.zeros(10), name="affine2"
    )
    with pytest.raises(ValueError, match=r"Affine 'affine2': expected input with 100 features"):
        layer.forward(np.zeros((64, 50)))
