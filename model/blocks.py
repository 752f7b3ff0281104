"""Blocks with branches (book chapter 8's VGG, GoogLeNet and ResNet): layers holding layers.

A block is one plan entry whose attrs hold sub-plans, (name, kind, attrs) lists like the
network's own: a residual block {"body": plan, "shortcut": plan}, an Inception block
{"branches": [plan, ...]}. Its sub-layers' parameters are named views in the one flat buffer,
prefixed with the block's name and in construction order: `block2.conv1.W`, then
`block2.bn1.gamma`, ... (walk() gives that order; Network and the ONNX export follow it).
The blocks themselves are plain layers, forward and backward side by side; maps are NHWC.
"""

import numpy as np

BLOCK_KINDS = ("residual", "inception")


def sub_plans(kind, attrs):
    """The sub-plans of a block entry, in construction order (body before shortcut)."""
    return [attrs["body"], attrs["shortcut"]] if kind == "residual" else list(attrs["branches"])


def map_sub_plans(kind, attrs, change):
    """The block's attrs with change(sub_plan) in place of each sub-plan."""
    if kind == "residual":
        return {**attrs, "body": change(attrs["body"]), "shortcut": change(attrs["shortcut"])}
    return {**attrs, "branches": [change(plan) for plan in attrs["branches"]]}


def walk(plan, prefix=""):
    """Every entry of a plan but the blocks, depth first, with its full name (block2.conv1)."""
    for name, kind, attrs in plan:
        if kind in BLOCK_KINDS:
            for sub in sub_plans(kind, attrs):
                yield from walk(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", kind, attrs


def forward_all(layers, x, train):
    """x through a sequence (dict) of layers, in order."""
    for layer in layers.values():
        x = layer.forward(x, train)
    return x


def backward_all(layers, dout):
    """dout back through a sequence (dict) of layers, in reverse order."""
    for layer in reversed(layers.values()):
        dout = layer.backward(dout)
    return dout


def leaves(layers):
    """Every layer of a {name: layer} sequence but the blocks, depth first (blocks' inside)."""
    for layer in layers.values():
        if hasattr(layer, "parts"):
            for part in layer.parts:
                yield from leaves(part)
        else:
            yield layer


def named_leaves(layers, prefix=""):
    """(full name, layer) of every layer of a {name: layer} sequence but the blocks, depth
    first, named as their parameters are (block2.bn1): how train.freeze finds a BatchNorm."""
    for name, layer in layers.items():
        if hasattr(layer, "parts"):
            for part in layer.parts:
                yield from named_leaves(part, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", layer


class ResidualBlock:
    """out = body(x) + shortcut(x): ResNet's block (He et al. 2016), the ReLU after it apart.

    body: the layers conv - bn - relu - conv - bn (a dict, by name); shortcut: empty (the
    identity) or a 1x1 projection conv - bn where the body changes the shape (stride 2, more
    channels). The sum's gradient reaches both paths unchanged, and the input's gradient is
    the sum of theirs: the identity path carries dout straight back to earlier layers.
    """

    def __init__(self, body, shortcut):
        self.body, self.shortcut = body, shortcut
        self.parts = [body, shortcut]  # every block's sub-layers, in construction order

    def forward(self, x, train=True):
        return forward_all(self.body, x, train) + forward_all(self.shortcut, x, train)

    def backward(self, dout):
        return backward_all(self.body, dout) + backward_all(self.shortcut, dout)


class InceptionBlock:
    """GoogLeNet's block (Szegedy et al. 2015): parallel branches, concatenated by channel.

    branches: a list of layer sequences (dicts), e.g. 1x1; 1x1 -> 3x3; 1x1 -> 5x5 (or two
    3x3); 3x3 max pool (stride 1, pad 1) -> 1x1. Every branch keeps the height and width,
    so the NHWC outputs concatenate along the last axis. backward hands each branch its
    channels of dout and adds up the branches' input gradients.
    """

    def __init__(self, branches):
        self.branches = branches
        self.parts = branches

    def forward(self, x, train=True):
        outs = [forward_all(branch, x, train) for branch in self.branches]
        self.channels = [out.shape[-1] for out in outs]
        return np.concatenate(outs, axis=-1)

    def backward(self, dout):
        dx, start = None, 0
        for branch, channels in zip(self.branches, self.channels, strict=True):
            d = backward_all(branch, dout[..., start : start + channels])
            dx = d if dx is None else dx + d  # a new array: no branch's gradient is changed
            start += channels
        return dx
