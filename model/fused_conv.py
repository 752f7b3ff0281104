"""FusedConvolution: the network's fast convolution, with the 2x2 max pooling and ReLU after it.

The same values as the book's layers conv.Convolution -> layers.Relu -> pooling.Pooling
(tests/model/test_fused_conv.py proves it), computed faster (docs/speed.md); the network
plan substitutes it for them explicitly (builders.fuse). Three changes to the book's way:

- The batch runs in chunks whose im2col rows stay in the L2 cache, and the pooling and the
  ReLU run on each chunk's GEMM output while it is still there. The rows of a chunk are
  copied in pooling order, so the four members of every 2x2 window are four planes.
- The input gradient is a convolution too (of the padded output gradient with the flipped
  filters), one im2col and one GEMM, instead of the book's col2im scatter; the same im2col
  gives the weight gradient.
- ReLU runs after the pooling, on maps a quarter of the size: max and ReLU commute, and so
  do their gradients (builders.fuse swaps them in the plan).

Maps are NHWC (N, H, W, C) as everywhere in the network; the filters keep the book's shape
(FN, C, FH, FW) in the parameter buffer.
"""

import numpy as np

from .im2col import Scratch, conv_output_size, copy_windows, pad_maps, windows
from .pooling import Pooling

# im2col bytes per batch chunk; tuned on a 1 MB-L2 Xeon (see docs/speed.md)
CHUNK_BYTES = 1 << 20


class FusedConvolution:
    """Convolution of NHWC maps with filters W (FN, C, FH, FW) and bias b (FN,), then
    (pool=True) 2x2 / stride 2 max pooling, then (relu=True) ReLU.

    need_dx=False skips the input gradient: the first layer's is never used. The pooling
    runs on each chunk of the GEMM output (see _pool_chunk), the ReLU too, not in more passes
    over the maps; where the output size is odd, the Pooling layer pools the whole maps.
    The batch is processed in chunks whose im2col rows fit in the L2 cache, so each GEMM
    reads rows the copy has just written instead of fetching them back from memory. The
    rows are not kept for backward (tens of MB for deep_cnn); backward copies what it needs.
    """

    def __init__(
        self, W, b, dW, db, stride=1, pad=0, need_dx=True, name="conv", pool=False, relu=False
    ):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.stride, self.pad, self.need_dx, self.name = stride, pad, need_dx, name
        self.pool, self.pooling, self.relu = pool, Pooling(2, 2, stride=2), relu
        self.scratch = Scratch()

    def forward(self, x, train=True):
        FN, C, FH, FW = self.W.shape
        if x.ndim != 4 or x.shape[3] != C:
            raise ValueError(
                f"FusedConvolution '{self.name}': expected NHWC input with {C} "
                f"channels, got array of shape {x.shape}"
            )
        N, H, W, _ = x.shape
        OH = conv_output_size(H, FH, self.stride, self.pad)
        OW = conv_output_size(W, FW, self.stride, self.pad)
        self.xp = pad_maps(x, self.pad, self.scratch, "xp")  # kept: backward re-copies its rows
        self.x, self.x_shape, self.out_shape = x, x.shape, (N, OH, OW, FN)
        self.fused = self.pool and OH % 2 == 0 and OW % 2 == 0
        self.pool_apart = self.pool and not self.fused  # odd sizes: the Pooling layer's way
        self.win = windows(self.xp, FH, FW, self.stride)
        if self.fused:  # rows in pooling order (n, i, j, oh/2, ow/2): see _pool_chunk
            self.win = self.win.reshape(N, OH // 2, 2, OW // 2, 2, FH, FW, C)
            self.win = self.win.transpose(0, 2, 4, 1, 3, 5, 6, 7)
            if train:  # the routing of each window's gradient, for backward
                self.masks = self.scratch.get("masks", (3, N, OH // 2, OW // 2, FN), bool)
        out = np.empty((N, OH // 2, OW // 2, FN) if self.fused else self.out_shape, x.dtype)
        W_col = self.W.transpose(2, 3, 1, 0).reshape(FH * FW * C, FN)
        for n0, n1, col in self._cols():
            y = self._chunk_buf("y", n1 - n0, OH * OW * FN) if self.fused else out[n0:n1]
            y = y.reshape(-1, FN)
            np.matmul(col, W_col, out=y)
            if self.fused:  # the bias after the pooling, on a quarter of the values
                self._pool_chunk(y.reshape(n1 - n0, 2, 2, -1), out[n0:n1], n0, n1, train)
                continue
            y += self.b  # while the chunk is still in cache
            if self.relu and not self.pool:
                np.maximum(y, 0, out=y)
        if self.pool_apart:  # pooling, then the ReLU, over the whole maps
            out = self.pooling.forward(out, train)
            if self.relu:
                np.maximum(out, 0, out=out)
        self.out = out
        return out

    def _cols(self):
        """(n0, n1, im2col rows of samples n0:n1) for every chunk of the batch."""
        N, OH, OW, FH, FW, C = self.win.shape[0], *self.out_shape[1:3], *self.win.shape[-3:]
        per_sample = OH * OW * FH * FW * C
        self.step = min(_chunk(per_sample * self.xp.itemsize), N)
        for n0 in range(0, N, self.step):
            n1 = min(n0 + self.step, N)
            yield n0, n1, copy_windows(self.win[n0:n1], self._chunk_buf("col", n1 - n0, per_sample))

    def _chunk_buf(self, key, n, per_sample):
        """n samples' worth of a flat work array reused from chunk to chunk and call to call."""
        return self.scratch.get(key, (self.step * per_sample,), self.xp.dtype)[: n * per_sample]

    def _pool_chunk(self, y, out, n0, n1, train):
        """2x2 max pooling of one chunk of the GEMM output y (n, i, j, OH/2 * OW/2 * FN).

        The rows were copied in pooling order, so the members (i, j) of every window are four
        contiguous planes and each comparison runs over whole planes, about 4x faster than
        over NHWC maps (runs of C values). The masks keep the first-maximum routing (the
        book's, PyTorch's) for backward: top row >= bottom row, then left >= right.
        y has no bias yet: a window's members share it, so max(y) + b is the book's max(y + b)
        bit for bit (rounding is monotonic); the routing differs only where adding b rounds
        two different members to one value, and then goes to the larger one.
        """
        a, b, c, d = y[:, 0, 0], y[:, 0, 1], y[:, 1, 0], y[:, 1, 1]
        top, bottom = np.maximum(a, b), np.maximum(c, d)
        np.maximum(top, bottom, out=out.reshape(top.shape))
        out += self.b
        if self.relu:
            np.maximum(out, 0, out=out)
        if train:
            m = self.masks[:, n0:n1].reshape(3, *top.shape)
            np.greater_equal(top, bottom, out=m[0])
            np.greater_equal(a, b, out=m[1])
            np.greater_equal(c, d, out=m[2])

    def _output_grad(self, dout, n0, n1, dy=None):
        """The gradient of the convolution's output for samples n0:n1, rows as in forward.

        Chunk by chunk, in cache: the fused ReLU's mask, the bias gradient (a GEMV, much
        faster than sum(axis=0); the pooled gradient has the same sum), the unpooling: into
        `dy` where given (a view (n, 2, 2, OH/2, OW/2, FN) of the backward's frame), else into
        a work array whose rows are returned.
        """
        FN = self.W.shape[0]
        g = dout[n0:n1]
        if self.relu and not self.pool_apart:  # into a work array: dout stays as it is
            buf = self._chunk_buf("g", n1 - n0, g[0].size).reshape(g.shape)
            g = np.multiply(g, self.out[n0:n1] > 0, out=buf)
        g = g.reshape(-1, FN)
        ones = self._chunk_buf("ones", n1 - n0, g.shape[0] // (n1 - n0))
        ones.fill(1)
        self.db_sum += ones @ g
        if not self.fused:
            return g
        _, OH, OW, _ = self.out_shape
        shape = (n1 - n0, OH // 2, OW // 2, FN)
        rows = dy is None
        if rows:
            dy = self._chunk_buf("dy", n1 - n0, OH * OW * FN).reshape(n1 - n0, 2, 2, *shape[1:])
        dp, m = g.reshape(shape), self.masks[:, n0:n1]
        dtop = dp * m[0]
        for i, dhalf in ((0, dtop), (1, dp - dtop)):  # the rest is exact: one half is zero
            np.multiply(dhalf, m[1 + i], out=dy[:, i, 0])
            np.subtract(dhalf, dy[:, i, 0], out=dy[:, i, 1])
        return dy.reshape(-1, FN) if rows else None

    def backward(self, dout):
        dout = np.ascontiguousarray(dout)
        if self.pool_apart:
            dout = self.pooling.backward(dout * (self.out > 0) if self.relu else dout)
        self.db_sum = np.zeros(self.W.shape[0], dout.dtype)
        if self.need_dx:
            dx = self._input_and_weight_grad(dout)
        else:
            dx = self._weight_grad(dout)
        self.db[...] = self.db_sum
        return dx

    def _weight_grad(self, dout):
        """dW = col.T @ dout, chunk by chunk: the first layer's case, where dx is not needed."""
        FN, C, FH, FW = self.W.shape
        dW_col = self.scratch.get("dW_col", (FH * FW * C, FN), dout.dtype)
        part = self.scratch.get("dW_part", dW_col.shape, dout.dtype)
        for n0, n1, col in self._cols():
            np.matmul(col.T, self._output_grad(dout, n0, n1), out=dW_col if n0 == 0 else part)
            if n0:
                dW_col += part
        self.dW[...] = dW_col.reshape(FH, FW, C, FN).transpose(3, 2, 0, 1)

    def _input_and_weight_grad(self, dout):
        """dx and dW from ONE im2col, of the output gradient around each input pixel.

        dx = dcol @ W_flip (see _dilated_frame). The same rows give dW: dcol's column
        (fh', fw', f) holds, for input pixel (h, w), the dout value whose filter tap on that
        pixel is (FH-1-fh', FW-1-fw'), so dcol.T @ x is dW with the taps flipped. This saves
        the second im2col (of the input) that dW = col.T @ dout would need.
        """
        FN, C, FH, FW = self.W.shape
        N, H, W, _ = self.x_shape
        _, OH, OW, _ = self.out_shape
        K = FH * FW * FN
        dd, inner = self._dilated_frame(dout.dtype)
        W_flip = self.W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(K, C)
        dW_t = self.scratch.get("dW_t", (K, C), dout.dtype)
        part = self.scratch.get("dW_part", dW_t.shape, dout.dtype)
        self.step = min(_chunk(H * W * K * dout.itemsize), N)
        dx = np.empty(self.x_shape, dout.dtype)
        win = windows(dd, FH, FW, 1)
        for n0 in range(0, N, self.step):
            n1 = min(n0 + self.step, N)
            if self.fused:  # unpooled straight into its NHWC positions in the frame
                inner6 = inner[n0:n1].reshape(n1 - n0, OH // 2, 2, OW // 2, 2, FN)
                self._output_grad(dout, n0, n1, dy=inner6.transpose(0, 2, 4, 1, 3, 5))
            else:
                inner[n0:n1] = self._output_grad(dout, n0, n1).reshape(n1 - n0, OH, OW, FN)
            dcol = copy_windows(win[n0:n1], self._chunk_buf("dcol", n1 - n0, H * W * K))
            np.matmul(dcol, W_flip, out=dx[n0:n1].reshape(-1, C))
            x_rows = self.x[n0:n1].reshape(-1, C)
            # (K, C), not (C, K): the GEMM runs up to 1.5x faster in this orientation
            np.matmul(dcol.T, x_rows, out=dW_t if n0 == 0 else part)
            if n0:
                dW_t += part
        self.dW[...] = dW_t.reshape(FH, FW, FN, C)[::-1, ::-1].transpose(2, 3, 0, 1)
        return dx

    def _dilated_frame(self, dtype):
        """A zero frame for dout, dilated by the stride: dx is its correlation with W flipped.

        Input pixel (i, j) of the padded input receives dout[a, b] * W[i - s*a, j - s*b]. With
        dout placed at offset FH-1 (FW-1) every sum is one FH x FW window; the window of input
        row i (unpadded) starts at frame row i + pad, so the frame is cut to start there, and
        rows beyond the last output (the stride can leave some) read zeros. Returns the cut
        frame and the view where dout goes (its gaps are never written: they stay zero).
        """
        FN, C, FH, FW = self.W.shape
        N, H, W, _ = self.x_shape
        _, OH, OW, _ = self.out_shape
        s, p = self.stride, self.pad
        Hd, Wd = (OH - 1) * s + 1, (OW - 1) * s + 1
        Hf = max(Hd + 2 * (FH - 1), p + H + FH - 1)
        Wf = max(Wd + 2 * (FW - 1), p + W + FW - 1)
        dd = self.scratch.get("dd", (N, Hf, Wf, FN), dtype, zero=True)
        inner = dd[:, FH - 1 : FH - 1 + Hd : s, FW - 1 : FW - 1 + Wd : s, :]
        return dd[:, p : p + H + FH - 1, p : p + W + FW - 1, :], inner


def _chunk(bytes_per_sample):
    """Samples per chunk so that one chunk of im2col rows stays in the L2 cache."""
    return max(1, CHUNK_BYTES // max(bytes_per_sample, 1))
