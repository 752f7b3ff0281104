"""im2col on NHWC maps, and the small helpers the convolution and pooling layers share.

The book's common/util.py has im2col, col2im and conv_output_size; these are their NHWC
versions (no col2im: the input gradient is a convolution, see conv.py).
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


def im2col(x, FH, FW, stride, out=None):
    """x (N, H, W, C), already padded -> (N*OH*OW, FH*FW*C), rows in NHWC output order."""
    win = windows(x, FH, FW, stride)
    return copy_windows(win, np.empty(win.shape, x.dtype) if out is None else out)


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
