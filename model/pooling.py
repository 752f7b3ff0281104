"""Max pooling of NHWC feature maps (book chapter 7)."""

import numpy as np

from .im2col import Scratch, conv_output_size


class Pooling:
    """Max pooling of NHWC maps over pool_h x pool_w windows.

    The maximum of each window is taken offset by offset (strided views, no im2col copy);
    2x2 windows with stride 2 have a shorter path (after a convolution, the network plan
    pools inside FusedConvolution instead: builders.fuse_convolutions). backward routes
    each window's gradient to ONE maximum, the first in row-major order as the book's argmax
    does: a plain equality mask would count ties (common in MNIST) twice.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
        self.scratch = Scratch()

    def _windows(self, xp, OH, OW):
        s = self.stride
        for i in range(self.pool_h):
            for j in range(self.pool_w):
                yield (
                    slice(None),
                    slice(i, i + s * (OH - 1) + 1, s),
                    slice(j, j + s * (OW - 1) + 1, s),
                    slice(None),
                )

    def forward(self, x, train=True):
        N, H, W, C = x.shape
        self.fast = (
            (self.pool_h, self.pool_w, self.stride, self.pad) == (2, 2, 2, 0)
            and H % 2 == 0
            and W % 2 == 0
        )
        return self._forward_2x2(x) if self.fast else self._forward_windows(x)

    def backward(self, dout):
        return self._backward_2x2(dout) if self.fast else self._backward_windows(dout)

    # -- the nets' 2x2 / stride 2 case: the four offsets as views, pairs compared once ------

    def _forward_2x2(self, x):
        N, H, W, C = x.shape
        self.x6 = x.reshape(N, H // 2, 2, W // 2, 2, C)
        a, b, c, d = (self.x6[:, :, i, :, j] for i in (0, 1) for j in (0, 1))
        self.top, self.bottom = np.maximum(a, b), np.maximum(c, d)
        return np.maximum(self.top, self.bottom)

    def _backward_2x2(self, dout):
        """The first maximum in row-major order: the top row wins ties, then the left column.

        dout is split top/bottom, then left/right, by one comparison each; the second half is
        the rest, dout - first half, exact because one of the two halves is zero.
        """
        dx = np.empty(self.x6.shape, dout.dtype)
        dtop = dout * (self.top >= self.bottom)
        for i, dhalf in ((0, dtop), (1, dout - dtop)):
            left, right = self.x6[:, :, i, :, 0], self.x6[:, :, i, :, 1]
            dleft = np.multiply(dhalf, left >= right, out=dx[:, :, i, :, 0])
            np.subtract(dhalf, dleft, out=dx[:, :, i, :, 1])
        N, OH, _, OW, _, C = dx.shape
        return dx.reshape(N, 2 * OH, 2 * OW, C)

    # -- any window, stride and padding ----------------------------------------------------

    def _forward_windows(self, x):
        N, H, W, C = x.shape
        OH = conv_output_size(H, self.pool_h, self.stride, self.pad)
        OW = conv_output_size(W, self.pool_w, self.stride, self.pad)
        if self.pad:
            xp = np.full((N, H + 2 * self.pad, W + 2 * self.pad, C), -np.inf, x.dtype)
            xp[:, self.pad : self.pad + H, self.pad : self.pad + W, :] = x
        else:
            xp = x
        out = None
        for w in self._windows(xp, OH, OW):
            out = xp[w].copy() if out is None else np.maximum(out, xp[w], out=out)
        self.xp, self.out, self.x_shape = xp, out, x.shape
        return out

    def _backward_windows(self, dout):
        N, H, W, C = self.x_shape
        OH, OW = self.out.shape[1:3]
        s, ph, pw = self.stride, self.pool_h, self.pool_w
        disjoint = s >= max(ph, pw)  # each input pixel in at most one window: write, not add
        covered = disjoint and s == ph == pw and (OH * s, OW * s) == self.xp.shape[1:3]
        dxp = (np.empty if covered else np.zeros)(self.xp.shape, dout.dtype)
        taken = np.zeros(self.out.shape, bool)
        first = np.empty(self.out.shape, bool)
        windows = list(self._windows(self.xp, OH, OW))
        for k, w in enumerate(windows):
            if k == len(windows) - 1:  # the last offset holds the max wherever no other did
                np.logical_not(taken, out=first)
            else:
                np.equal(self.xp[w], self.out, out=first)
                np.greater(first, taken, out=first)  # first & ~taken: later ties get nothing
                taken |= first
            if disjoint:
                np.multiply(dout, first, out=dxp[w])
            else:
                dxp[w] += dout * first
        p = self.pad
        return dxp[:, p : p + H, p : p + W, :] if p else dxp
