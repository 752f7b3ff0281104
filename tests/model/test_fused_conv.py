"""FusedConvolution equals the book's Convolution -> Relu -> Pooling it replaces in the plan,
layer by layer and in whole networks (build(spec, fuse=True) against fuse=False)."""

import numpy as np
import pytest
from numerics import gamma, sum_bound

from mpinet.model import build
from mpinet.model.conv import Convolution
from mpinet.model.fused_conv import FusedConvolution
from mpinet.model.layers import Relu
from mpinet.model.pooling import Pooling

pytestmark = pytest.mark.numerics  # run again under another BLAS kernel (.ci/run)

# (x shape NHWC, W shape, pad, pool, need_dx): the convolutions of simple_cnn and deep_cnn at
# 28x28 (conv1 returns no dx in the nets), and odd sizes: conv4 (pad 2) on 12x12 maps makes
# 14x14 and pools to 7x7; on 7x7 maps it makes 9x9, which FusedConvolution pools apart.
SHAPES = {
    "simple_cnn.conv1": ((2, 28, 28, 1), (30, 1, 5, 5), 0, True, False),
    "deep_cnn.conv1": ((2, 28, 28, 1), (16, 1, 3, 3), 1, False, False),
    "deep_cnn.conv2": ((2, 28, 28, 16), (16, 16, 3, 3), 1, True, True),
    "deep_cnn.conv3": ((2, 14, 14, 16), (32, 16, 3, 3), 1, False, True),
    "deep_cnn.conv4": ((2, 14, 14, 32), (32, 32, 3, 3), 2, True, True),
    "deep_cnn.conv5": ((2, 8, 8, 32), (64, 32, 3, 3), 1, False, True),
    "deep_cnn.conv6": ((2, 8, 8, 64), (64, 64, 3, 3), 1, True, True),
    "conv4_on_12x12": ((3, 12, 12, 5), (4, 5, 3, 3), 2, True, True),
    "conv4_on_7x7_odd": ((3, 7, 7, 5), (4, 5, 3, 3), 2, True, True),
    "simple_cnn_on_27x27_odd": ((2, 27, 27, 1), (6, 1, 5, 5), 0, True, True),
}


def _layers(W, b, pad, pool, relu, need_dx):
    """(the fused layer, the book's layers it stands for, in the book's order)."""
    views = (W, b, np.zeros_like(W), np.zeros_like(b))
    fused = FusedConvolution(*views, pad=pad, need_dx=need_dx, pool=pool, relu=relu)
    conv = Convolution(W, b, np.zeros_like(W), np.zeros_like(b), pad=pad, need_dx=need_dx)
    book = [conv] + [Relu()] * relu + [Pooling(2, 2, stride=2)] * pool
    return fused, conv, book


def _run(layers, x, dout):
    for layer in layers:
        x = layer.forward(x)
    out = x
    for layer in reversed(layers):
        dout = layer.backward(dout)
    return out, dout


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no_relu"])
@pytest.mark.parametrize("key", sorted(SHAPES))
def test_fused_layer_equals_the_books_conv_relu_pool(key, relu, rng):
    """Forward, dx, dW and db within the bound of two orders of the same sums (numerics.py).

    Random float64 data: no conv output sits within the bound of 0 (the ReLU's kink) or of
    its window's other maxima, so both route every gradient alike (ties: the test below).
    """
    x_shape, W_shape, pad, pool, need_dx = SHAPES[key]
    x, W = rng.standard_normal(x_shape), rng.standard_normal(W_shape)
    b = rng.standard_normal(W_shape[0])
    fused, conv, book = _layers(W, b, pad, pool, relu, need_dx)
    out = fused.forward(x)
    dout = rng.standard_normal(out.shape)
    out_book, dx_book = _run(book, x, dout)
    dx = fused.backward(dout)
    FN, C, FH, FW = W_shape
    positions = conv.col.shape[0]  # N * OH * OW: the terms of each dW and db sum
    x_max, W_max, d_max = np.abs(x).max(), np.abs(W).max(), np.abs(dout).max()
    bound = {
        "out": sum_bound(C * FH * FW + 1, max(x_max * W_max, np.abs(b).max()), np.float64),
        "dx": sum_bound(FH * FW * FN, d_max * W_max, np.float64),
        "dW": sum_bound(positions, x_max * d_max, np.float64),
        "db": sum_bound(positions, d_max, np.float64),
    }
    assert out.shape == out_book.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, out_book, rtol=0, atol=bound["out"])
    if need_dx:
        np.testing.assert_allclose(dx, dx_book, rtol=0, atol=bound["dx"])
    else:
        assert dx is None and dx_book is None
    np.testing.assert_allclose(fused.dW, conv.dW, rtol=0, atol=bound["dW"])
    np.testing.assert_allclose(fused.db, conv.db, rtol=0, atol=bound["db"])


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("channels,size,pad", [(1, 5, 0), (3, 3, 1), (2, 3, 2), (2, 3, 0)])
def test_fused_layer_routes_ties_as_the_books_layers(relu, need_dx, channels, size, pad, rng):
    """Small integers: exact sums, so the same values bit for bit, and many tied maxima for
    the routing to get right. The (2, 3, 0) case has an odd output size (pooled apart)."""
    x = rng.integers(-2, 3, (3, 9, 9, channels)).astype(np.float64)
    W = rng.integers(-1, 2, (4, channels, size, size)).astype(np.float64)
    b = rng.integers(-1, 2, 4).astype(np.float64)
    for pool in (True, False):
        fused, conv, book = _layers(W, b, pad, pool, relu, need_dx)
        out = fused.forward(x)
        dout = rng.integers(-3, 4, out.shape).astype(np.float64)
        out_book, dx_book = _run(book, x, dout)
        np.testing.assert_array_equal(out, out_book)
        dx = fused.backward(dout)
        if need_dx:
            np.testing.assert_array_equal(dx, dx_book)
        np.testing.assert_array_equal(fused.dW, conv.dW)
        np.testing.assert_array_equal(fused.db, conv.db)


# -- whole networks ------------------------------------------------------------------------

SPECS = {
    "simple_cnn": {"name": "simple_cnn", "filters": 6, "hidden": 20},
    "deep_cnn": {"name": "deep_cnn", "filters": [4, 4, 6, 6, 8, 8], "hidden": 12, "dropout": 0.0},
    "deep_cnn_14x14": {  # conv4 makes 9x9 maps: the pooling apart inside FusedConvolution
        "name": "deep_cnn",
        "filters": [3, 3, 4, 4, 5, 5],
        "hidden": 8,
        "dropout": 0.0,
        "input_shape": [1, 14, 14],
    },
}


def _magnitudes(book, x, dout):
    """A running error analysis of the book's net: its forward and backward in |values|.

    Its layers with |W| and |b| on |x|, every ReLU and max pooling routing as in the book
    net's last forward (the same in the fused net, where no value is within the bound of a
    kink or of a tie): every computed value is then bounded by M, the sum of the |terms|
    behind it through all the layers before, and two orders of every sum differ by at most
    2 * gamma(T) * M, T the terms of all the sums counted (first order, as in
    numerics.affine_relu_logit_bound). The backward is linear in dout: a bound on an error
    of dout passes through it the same way. -> (M of the scores, of each gradient, T).
    """
    net = build(book.spec, dtype="float64", fuse=False)
    np.abs(book.buffer.data, out=net.buffer.data)
    terms, m = 0, np.abs(x)
    for name, kind, attrs in net.plan:
        route = book.layers[name]
        if kind == "relu":
            m = m * (route.out > 0)
        elif kind == "pool":  # the routed pixel of each window: route.backward(1) is 1 there
            routed = route.backward(np.ones_like(net.layers[name].forward(m)))
            m = net.layers[name].forward(m * routed)
        else:
            m = net.layers[name].forward(m)
        if kind == "conv":  # out: C*FH*FW products and b; dx: FN*FH*FW; dW, db: N*OH*OW
            FN, C, FH, FW = attrs["shape"]
            terms += C * FH * FW + 1 + FN * FH * FW + len(net.layers[name].col)
        elif kind == "affine":  # out: in products and b; dx: out; dW, db: N
            terms += sum(attrs["shape"]) + 1 + len(x)
    d = np.abs(dout)
    for name, kind, _ in reversed(net.plan):
        layer = book.layers[name] if kind in ("relu", "pool") else net.layers[name]
        d = layer.backward(d)
    return m, net.grads, terms


@pytest.mark.parametrize("key", sorted(SPECS))
def test_fused_net_equals_the_book_net(key):
    """build(spec) and build(spec, fuse=False): the same parameters, bit for bit, and the
    same loss and gradients within the bound of reordered sums (_magnitudes)."""
    spec = SPECS[key]
    fused, book = (build(spec, dtype="float64", seed=3, fuse=f) for f in (True, False))
    assert fused.buffer.layout() == book.buffer.layout()
    assert np.array_equal(fused.buffer.data, book.buffer.data)
    rng = np.random.default_rng(4)
    n, classes = 6, 10
    x, t = rng.random((n, int(np.prod(book.spec["input_shape"])))), rng.integers(0, classes, n)
    loss, book_loss = fused.loss(x, t), book.loss(x, t)
    fused.backward()
    book.backward()
    dout, book_dout = fused.loss_layer.backward(), book.loss_layer.backward()  # (p - t) / n
    y, book_y = fused.predict(x), book.predict(x)  # the book's layers keep this routing

    scores, _, terms = _magnitudes(book, x, book_dout)
    _assert_within("scores", y, book_y, 2 * gamma(terms, np.float64) * scores)
    # The loss, log(sum exp(y - max)) - (y_t - max), moves by at most 2 max|dy| per sample;
    # its own rounding: exp of y - max (relative |y - max| * u), the sums, the log.
    shift = int(np.ceil(np.abs(book_y - book_y.max(axis=1, keepdims=True)).max()))
    rounding = 2 * gamma(shift + classes + n + 5, np.float64) * (1 + np.log(classes) + shift)
    assert abs(loss - book_loss) <= np.mean(2 * np.abs(y - book_y).max(axis=1)) + rounding
    # The gradients: the backward's own rounding (and the scores' inputs': T counts all the
    # terms), plus what the two nets' different dout explain, through the linear backward.
    bound = 2 * gamma(terms, np.float64) * np.abs(book_dout) + np.abs(dout - book_dout)
    _, grad_bound, _ = _magnitudes(book, x, bound)
    for name in book.grads:
        _assert_within(name, fused.grads[name], book.grads[name], grad_bound[name])


def _assert_within(name, a, b, bound):
    excess = np.abs(a - b) - bound
    i = np.unravel_index(np.argmax(excess), excess.shape)
    where = [int(k) for k in i]
    assert excess[i] <= 0, f"{name}{where}: fused {a[i]!r}, book {b[i]!r}, bound {bound[i]:.3g}"
