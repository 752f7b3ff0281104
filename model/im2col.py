"""im2col and col2im on NHWC maps, and the small helpers the conv and pooling layers share.

The book's common/util.py has im2col, col2im and conv_output_size; these are their NHWC
versions. A row of the im2col matrix is one output pixel's window, its columns in
(FH, FW, C) order. conv.py uses im2col and col2im as the book does; fused_conv.py uses
windows() and copy_windows() on chunks of the batch, and needs no col2im.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size, filter_size, stride, pad):
    return (size + 2 * pad - filter_size) // stride + 1


def windows(x, FH, FW, stride):
    """x (N, H, W, C), already padded -> read-only view (N, OH, OW, FH, FW, C) of its windows.

    Made once per layer call and sliced per chunk: as_strided itself costs ~40 us a call.
    """
    N, H, W, C = x.shape
    OH, OW = (H - FH) // stride + 1, (W - FW) // stride + 1
    sN, sH, sW, sC = x.strides
    return as_strided(
        x, (N, OH, OW, FH, FW, C), (sN, sH * stride, sW * stride, sH, sW, sC), writeable=False
    )


def copy_windows(win, out):
    """Copy a windows() view (..., FH, FW, C) into `out`: the im2col matrix (rows, FH*FW*C).

    Rows follow the leading axes of `win` (N, OH, OW, or any reordering of a view of them).
    """
    *lead, FH, FW, C = win.shape
    rows = int(np.prod(lead))
    if C == 1:  # one channel: runs of FW values are too short; copy whole maps per offset
        col_t = out.reshape(FH * FW, *lead)
        for i in range(FH):
            for j in range(FW):
                col_t[i * FW + j] = win[..., i, j, 0]
        return col_t.reshape(FH * FW, rows).T  # the same matrix, column-major
    np.copyto(out.reshape(win.shape), win)
    return out.reshape(rows, FH * FW * C)


def im2col(x, FH, FW, stride=1, pad=0):
    """x (N, H, W, C) -> (N*OH*OW, FH*FW*C), rows in NHWC output order, in x's dtype."""
    if pad:
        x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    win = windows(x, FH, FW, stride)
    return copy_windows(win, np.empty(win.shape, x.dtype))


def col2im(col, x_shape, FH, FW, stride=1, pad=0):
    """The reverse of im2col: (N*OH*OW, FH*FW*C) -> (N, H, W, C), overlaps added up.

    As the book's col2im: for each filter offset (y, x), every window's value at that offset
    is added to the pixel it was copied from; the padding is cut off at the end.
    """
    N, H, W, C = x_shape
    OH = conv_output_size(H, FH, stride, pad)
    OW = conv_output_size(W, FW, stride, pad)
    col = col.reshape(N, OH, OW, FH, FW, C)
    img = np.zeros((N, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1, C), col.dtype)
    for y in range(FH):
        y_max = y + stride * OH
        for x in range(FW):
            x_max = x + stride * OW
            img[:, y:y_max:stride, x:x_max:stride, :] += col[:, :, :, y, x, :]
    return img[:, pad : H + pad, pad : W + pad, :]


class Scratch:
    """Reusable arrays keyed by name; the zero border of a padding buffer stays zero."""

    def __init__(self):
        self.arrays = {}

    def get(self, key, shape, dtype, zero=False):
        a = self.arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self.arrays[key] = a
        return a


def pad_maps(x, p, scratch, key):
    """Zero-pad H and W of an NHWC map by p into a reused buffer (border written once)."""
    if p == 0:
        return np.ascontiguousarray(x)
    N, H, W, C = x.shape
    xp = scratch.get(key, (N, H + 2 * p, W + 2 * p, C), x.dtype, zero=True)
    xp[:, p : p + H, p : p + W, :] = x
    return xp
