"""The book's Convolution layer (chapter 7), on NHWC feature maps.

The book keeps maps as NCHW and transposes the GEMM result back to NCHW. Here maps flow
between layers as NHWC (N, H, W, C), so `col @ col_W` is the output already; the filters
keep the book's shape (FN, C, FH, FW). The network converts its input to NHWC once, at the
start (layers.ToNHWC), and back to the book's (C, H, W) order before the first Affine.

This is the layer as the book teaches it; the network trains with fused_conv's
FusedConvolution, which gives the same values faster (builders.fuse puts it in the plan).
"""

import numpy as np

from .im2col import col2im, conv_output_size, im2col


class Convolution:
    """2-D convolution of NHWC maps with filters W (FN, C, FH, FW) and bias b (FN,).

    need_dx=False skips the input gradient: the first layer's is never used.
    """

    def __init__(self, W, b, dW, db, stride=1, pad=0, need_dx=True, name="conv"):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.stride, self.pad, self.need_dx, self.name = stride, pad, need_dx, name

    def forward(self, x, train=True):
        FN, C, FH, FW = self.W.shape
        if x.ndim != 4 or x.shape[3] != C:
            raise ValueError(
                f"Convolution '{self.name}': expected NHWC input with {C} "
                f"channels, got array of shape {x.shape}"
            )
        N, H, W, _ = x.shape
        out_h = conv_output_size(H, FH, self.stride, self.pad)
        out_w = conv_output_size(W, FW, self.stride, self.pad)

        col = im2col(x, FH, FW, self.stride, self.pad)
        # rows in im2col's column order (FH, FW, C), one column per filter
        col_W = self.W.transpose(2, 3, 1, 0).reshape(FH * FW * C, FN)
        out = col @ col_W + self.b

        self.x, self.col, self.col_W = x, col, col_W
        return out.reshape(N, out_h, out_w, FN)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.reshape(-1, FN)

        self.db[...] = np.sum(dout, axis=0)
        dW = self.col.T @ dout
        self.dW[...] = dW.reshape(FH, FW, C, FN).transpose(3, 2, 0, 1)
        if not self.need_dx:
            return None

        dcol = dout @ self.col_W.T
        return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)
