"""Convolution and pooling via im2col (book chapter 7), on NHWC feature maps.

The book keeps maps as NCHW and builds im2col with six nested slices, then transposes the
GEMM result back. Here maps flow between layers as NHWC (N, H, W, C): im2col is then ONE
strided copy of the padded input, and `col @ W_col` writes the NHWC output directly. The
filters keep the book's shape (FN, C, FH, FW) in the parameter buffer; each step makes the
small (FH*FW*C, FN) copy the GEMM wants. The network converts its NCHW input once, at the
start, and back to the book's (C, H, W) order before the first Affine.

The input gradient is a convolution too (of the padded output gradient with the flipped
filters), one im2col and one GEMM, instead of the book's col2im scatter.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size, filter_size, stride, pad):
    return (size + 2 * pad - filter_size) // stride + 1


def im2col(x, FH, FW, stride, out=None):
    """x (N, H, W, C), already padded -> (N*OH*OW, FH*FW*C), rows in NHWC output order."""
    N, H, W, C = x.shape
    OH, OW = (H - FH) // stride + 1, (W - FW) // stride + 1
    sN, sH, sW, sC = x.strides
    windows = as_strided(x, (N, OH, OW, FH, FW, C),
                         (sN, sH * stride, sW * stride, sH, sW, sC), writeable=False)
    if out is None:
        out = np.empty((N, OH, OW, FH, FW, C), x.dtype)
    np.copyto(out, windows)
    return out.reshape(N * OH * OW, FH * FW * C)


class _Scratch:
    """Reusable arrays keyed by name; the zero border of a padding buffer stays zero."""

    def __init__(self):
        self.arrays = {}

    def get(self, key, shape, dtype, zero=False):
        a = self.arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self.arrays[key] = a
        return a


def _pad(x, p, scratch, key):
    """Zero-pad H and W of an NHWC map by p into a reused buffer (border written once)."""
    if p == 0:
        return np.ascontiguousarray(x)
    N, H, W, C = x.shape
    xp = scratch.get(key, (N, H + 2 * p, W + 2 * p, C), x.dtype, zero=True)
    xp[:, p:p + H, p:p + W, :] = x
    return xp


class Convolution:
    """2-D convolution of NHWC maps with filters W (FN, C, FH, FW) and bias b (FN,).

    need_dx=False skips the input gradient: the first layer's is never used.
    """

    def __init__(self, W, b, dW, db, stride=1, pad=0, need_dx=True, name="conv"):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.stride, self.pad, self.need_dx, self.name = stride, pad, need_dx, name
        self.scratch = _Scratch()

    def forward(self, x, train=True):
        FN, C, FH, FW = self.W.shape
        if x.ndim != 4 or x.shape[3] != C:
            raise ValueError(f"Convolution '{self.name}': expected NHWC input with {C} "
                             f"channels, got array of shape {x.shape}")
        N, H, W, _ = x.shape
        OH = conv_output_size(H, FH, self.stride, self.pad)
        OW = conv_output_size(W, FW, self.stride, self.pad)
        xp = _pad(x, self.pad, self.scratch, "xp")
        col_buf = self.scratch.get("col", (N, OH, OW, FH, FW, C), x.dtype)
        self.col = im2col(xp, FH, FW, self.stride, out=col_buf)
        W_col = self.W.transpose(2, 3, 1, 0).reshape(FH * FW * C, FN)
        out = self.col @ W_col
        out += self.b
        self.x_shape = x.shape
        return out.reshape(N, OH, OW, FN)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout2 = dout.reshape(-1, FN)
        dW_col = self.col.T @ dout2
        self.dW[...] = dW_col.reshape(FH, FW, C, FN).transpose(3, 2, 0, 1)
        ones = self.scratch.get("ones", (dout2.shape[0],), dout.dtype)
        ones.fill(1)
        self.db[...] = ones @ dout2
        if not self.need_dx:
            return None
        return self._input_grad(dout)

    def _input_grad(self, dout):
        """dx as a full correlation of the (dilated) output gradient with flipped filters."""
        FN, C, FH, FW = self.W.shape
        N, H, W, _ = self.x_shape
        N, OH, OW, _ = dout.shape
        s, p = self.stride, self.pad
        # Place dout (dilated by the stride) inside a zero frame of FH-1 / FW-1.
        Hd, Wd = (OH - 1) * s + 1, (OW - 1) * s + 1
        dd = self.scratch.get("dd", (N, Hd + 2 * (FH - 1), Wd + 2 * (FW - 1), FN), dout.dtype,
                              zero=True)
        dd[:, FH - 1:FH - 1 + Hd:s, FW - 1:FW - 1 + Wd:s, :] = dout
        Hc, Wc = Hd + FH - 1, Wd + FW - 1  # rows/cols of the padded input that filters touched
        col_buf = self.scratch.get("dcol", (N, Hc, Wc, FH, FW, FN), dout.dtype)
        col = im2col(dd, FH, FW, 1, out=col_buf)
        W_flip = self.W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(FH * FW * FN, C)
        dxp = (col @ W_flip).reshape(N, Hc, Wc, C)
        Hp, Wp = H + 2 * p, W + 2 * p
        if (Hc, Wc) != (Hp, Wp):  # the stride left the last rows/cols of the input unused
            full = np.zeros((N, Hp, Wp, C), dout.dtype)
            full[:, :Hc, :Wc, :] = dxp
            dxp = full
        return dxp[:, p:p + H, p:p + W, :]


class Pooling:
    """Max pooling of NHWC maps over pool_h x pool_w windows.

    The maximum of each window is taken offset by offset (strided views, no im2col copy).
    backward routes each window's gradient to ONE maximum, the first in row-major order as
    the book's argmax does: a plain equality mask would count ties (common in MNIST) twice.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
        self.scratch = _Scratch()

    def _windows(self, xp, OH, OW):
        s = self.stride
        for i in range(self.pool_h):
            for j in range(self.pool_w):
                yield (slice(None), slice(i, i + s * (OH - 1) + 1, s),
                       slice(j, j + s * (OW - 1) + 1, s), slice(None))

    def forward(self, x, train=True):
        N, H, W, C = x.shape
        OH = conv_output_size(H, self.pool_h, self.stride, self.pad)
        OW = conv_output_size(W, self.pool_w, self.stride, self.pad)
        if self.pad:
            xp = np.full((N, H + 2 * self.pad, W + 2 * self.pad, C), -np.inf, x.dtype)
            xp[:, self.pad:self.pad + H, self.pad:self.pad + W, :] = x
        else:
            xp = x
        out = None
        for w in self._windows(xp, OH, OW):
            out = xp[w].copy() if out is None else np.maximum(out, xp[w], out=out)
        self.xp, self.out, self.x_shape = xp, out, x.shape
        return out

    def backward(self, dout):
        N, H, W, C = self.x_shape
        OH, OW = self.out.shape[1:3]
        dxp = np.zeros(self.xp.shape, dout.dtype)
        taken = np.zeros(self.out.shape, bool)
        for w in self._windows(self.xp, OH, OW):
            first = self.xp[w] == self.out
            first &= ~taken
            taken |= first
            dxp[w] += dout * first
        p = self.pad
        return dxp[:, p:p + H, p:p + W, :] if p else dxp


class ToNHWC:
    """The network's entry for CNNs: (N, C*H*W) or (N, C, H, W) in, NHWC maps out."""

    def __init__(self, input_shape):
        self.input_shape = tuple(input_shape)  # (C, H, W)

    def forward(self, x, train=True):
        C, H, W = self.input_shape
        if x.size // max(x.shape[0], 1) != C * H * W:
            raise ValueError(f"expected images of shape {self.input_shape} (or {C * H * W} "
                             f"values per sample), got array of shape {x.shape}")
        self.x_shape = x.shape
        return np.ascontiguousarray(x.reshape(-1, C, H, W).transpose(0, 2, 3, 1))

    def backward(self, dout):
        if dout is None:  # the first convolution skipped its input gradient
            return None
        return dout.transpose(0, 3, 1, 2).reshape(self.x_shape)


class Flatten:
    """NHWC maps -> (N, C*H*W) rows in the book's (C, H, W) order, so Affine weights match."""

    def forward(self, x, train=True):
        self.x_shape = x.shape
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)

    def backward(self, dout):
        N, H, W, C = self.x_shape
        return dout.reshape(N, C, H, W).transpose(0, 2, 3, 1)
