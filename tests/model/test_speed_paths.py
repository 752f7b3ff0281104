"""The fast paths of model/ (docs/speed.md) give the same numbers as the simple ones.

FusedConvolution against the book's Convolution -> Relu -> Pooling: test_fused_conv.py.
"""

import numpy as np
import pytest
from numerics import sum_bound

from mpinet.model import fused_conv
from mpinet.model.fused_conv import FusedConvolution
from mpinet.model.im2col import col2im, im2col
from mpinet.model.layers import Relu
from mpinet.model.pooling import Pooling

pytestmark = pytest.mark.numerics  # run again under another BLAS kernel (.ci/run)


def _tied_maps(rng, shape):
    """Small integers: many exact ties in every 2x2 window, as MNIST's blank borders give."""
    return rng.integers(-2, 3, shape).astype(np.float32)


def test_pooling_2x2_path_equals_the_general_path(rng):
    x = _tied_maps(rng, (3, 8, 6, 5))
    dout = rng.standard_normal((3, 4, 3, 5)).astype(np.float32)
    fast, general = Pooling(2, 2, stride=2), Pooling(2, 2, stride=2)
    out = fast.forward(x)
    assert fast.fast
    np.testing.assert_array_equal(out, general._forward_windows(x))
    np.testing.assert_array_equal(fast.backward(dout), general._backward_windows(dout))


def test_pool_then_relu_equals_relu_then_pool(rng):
    """The network swaps relu -> pool to pool -> relu; values and gradients are unchanged."""
    x = _tied_maps(rng, (2, 6, 6, 4))
    dout = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    relu_a, pool_a = Relu(), Pooling(2, 2, stride=2)
    pool_b, relu_b = Pooling(2, 2, stride=2), Relu()
    out_a = pool_a.forward(relu_a.forward(x))
    out_b = relu_b.forward(pool_b.forward(x))
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(
        relu_a.backward(pool_a.backward(dout)), pool_b.backward(relu_b.backward(dout))
    )


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (1, 2), (2, 1), (3, 0)])
def test_convolution_in_batch_chunks_equals_one_chunk(stride, pad, rng, monkeypatch):
    x = rng.standard_normal((5, 9, 8, 3))
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    results = []
    for chunk_bytes in (1, 1 << 40):  # one sample per chunk, then the whole batch at once
        monkeypatch.setattr(fused_conv, "CHUNK_BYTES", chunk_bytes)
        layer = FusedConvolution(W, b, np.zeros_like(W), np.zeros_like(b), stride=stride, pad=pad)
        out = layer.forward(x)
        dx = layer.backward(np.cos(out))
        results.append((out, dx, layer.dW.copy(), layer.db.copy()))
    # The chunks split dW's and db's sums over samples and positions (at most N*OH*OW terms,
    # each |x| * |dout| <= max|x|); out and dx are sums of fewer, smaller-or-equal terms.
    n = x.shape[0] * x.shape[1] * x.shape[2]
    atol = sum_bound(n, np.abs(x).max() * max(np.abs(W).max(), 1.0), np.float64)
    for one, many in zip(*results, strict=True):
        np.testing.assert_allclose(one, many, rtol=0, atol=atol)


@pytest.mark.parametrize("channels", [1, 3])
def test_im2col_equals_the_definition(channels, rng):
    """One channel takes its own copy path (whole maps per filter offset)."""
    x = rng.standard_normal((2, 7, 6, channels)).astype(np.float32)
    for stride in (1, 2):
        col = im2col(x, 3, 2, stride)
        ref = np.lib.stride_tricks.sliding_window_view(x, (3, 2), axis=(1, 2))
        ref = ref[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)  # (N, OH, OW, FH, FW, C)
        np.testing.assert_array_equal(col, ref.reshape(col.shape))


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 2), (2, 1), (3, 0)])
def test_col2im_is_the_adjoint_of_im2col(stride, pad, rng):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im adds each value of c back
    onto the pixel im2col copied it from, overlaps and padding included. Small integers:
    both sides are exact sums."""
    x = rng.integers(-3, 4, (2, 7, 6, 3)).astype(np.float64)
    col = im2col(x, 3, 2, stride, pad)
    c = rng.integers(-3, 4, col.shape).astype(np.float64)
    assert col.dtype == np.float64 and im2col(x.astype(np.float32), 3, 2).dtype == np.float32
    dx = col2im(c, x.shape, 3, 2, stride, pad)
    assert dx.shape == x.shape
    assert np.sum(col * c) == np.sum(x * dx)
