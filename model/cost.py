"""What a network costs: its trainable parameters and forward multiply-adds per sample.

    python benchmarks/speed.py --cost     # the table of README's "Chapter 8 networks"

Multiply-adds are those of the convolutions and affines (C*FH*FW per output value of a
conv, the input size per output of an affine), the convention of the papers' FLOP counts;
the biases, BatchNorm, ReLU, pooling and the additions of blocks are left out (each is one
operation per value, a few percent at most). Counted on one sample through the book's layers,
so every size is the one the network really computes.
"""

import numpy as np

from .blocks import leaves
from .builders import build
from .conv import Convolution
from .layers import Affine


def cost(spec):
    """(trainable parameters, forward multiply-adds per sample) of the net a spec describes."""
    net = build(spec, fuse=False)
    net.forward(np.zeros((1, int(np.prod(net.spec["input_shape"]))), net.dtype), train=False)
    macs = 0
    for layer in leaves(net.layers):
        if isinstance(layer, Convolution):  # im2col rows: one per output pixel, C*FH*FW long
            macs += layer.col.size * layer.W.shape[0]
        elif isinstance(layer, Affine):
            macs += layer.W.size
    return net.buffer.size, macs
