"""Network: a sequence of layers over one ParamBuffer, plus a loss layer.

The layers are those a plan names (builders.py makes plans): the book's, and where the plan
says so, the faster equivalent FusedConvolution (fused_conv.py); a block entry (blocks.py)
becomes a layer holding the layers of its sub-plans.
"""

import numpy as np

from .blocks import BLOCK_KINDS, InceptionBlock, ResidualBlock, sub_plans, walk
from .conv import Convolution
from .functions import softmax
from .fused_conv import FusedConvolution
from .init import fill_normal_, init_std
from .layers import (
    Affine,
    BatchNormalization,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    IdentityWithLoss,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
    ToNHWC,
)
from .params import ParamBuffer
from .pooling import Pooling

SIMPLE_LAYERS = {
    "relu": Relu,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "flatten": Flatten,
    "gap": GlobalAveragePooling,
}
WEIGHT_KINDS = ("affine", "conv", "fused_conv")  # the layers with W, b, dW, db


class Network:
    """The book's MultiLayerNet interface over a plan of layers (builders.py makes plans).

    The plan's (name, kind, attrs) entries become the layers, in order, as they are: the
    network neither reorders nor replaces any (builders.fuse_convolutions does, visibly).

    loss(x, t) runs forward in training mode and returns the mean loss (weight decay
    included); backward() writes every gradient into buffer.grad; predict(x) returns the
    scores (before softmax) in evaluation mode, classify(x) the labels. params / grads map
    names ('conv1.W', 'affine2.b', ...) to views. Inputs x are floats (pixels in [0, 1]);
    integer arrays are refused (check_input), labels t are integers. input_layout is 'flat'
    (rows of features: mlp) or 'image' ((N, C, H, W) maps: the CNNs).
    """

    def __init__(self, plan, spec, dtype="float32", seed=0, dropout_seed=None, bn_allreduce=None):
        self.plan, self.spec = plan, spec
        self.input_layout = plan_input_layout(plan)
        specs, state_specs = _param_specs(plan)
        self.buffer = ParamBuffer(specs, dtype)
        self.state = ParamBuffer(state_specs, dtype, with_grad=False)
        self.dtype = self.buffer.dtype
        self.params, self.grads = self.buffer.params, self.buffer.grads
        self.weight_decay = float(spec.get("weight_decay", 0.0))
        self.dropout_rng = np.random.default_rng(seed if dropout_seed is None else dropout_seed)
        self._init_params(np.random.default_rng(seed))
        self.layers = self._make_layers(plan, "", bn_allreduce)
        loss = spec.get("loss", "softmax")
        self.loss_layer = SoftmaxWithLoss() if loss == "softmax" else IdentityWithLoss()
        self.decayed = [self.params[n] for n, _ in specs if n.endswith(".W")]
        self.decayed_grads = [self.grads[n] for n, _ in specs if n.endswith(".W")]

    def _init_params(self, rng):
        for name, kind, attrs in walk(self.plan):  # blocks' layers too, in plan order
            if kind in WEIGHT_KINDS:
                shape = attrs["shape"]
                fan_in = shape[0] if kind == "affine" else int(np.prod(shape[1:]))
                fill_normal_(self.params[f"{name}.W"], init_std(self.spec["init"], fan_in), rng)
            elif kind == "bn":
                self.params[f"{name}.gamma"][...] = 1
                self.state.params[f"{name}.running_var"][...] = 1

    def _make_layers(self, plan, prefix, bn_allreduce):
        """{name: layer} for a plan; a block's sub-plans with prefix 'block2.' (full names)."""
        return {
            name: self._make_layer(prefix + name, kind, attrs, bn_allreduce)
            for name, kind, attrs in plan
        }

    def _make_layer(self, name, kind, attrs, bn_allreduce):
        p, g, st = self.params, self.grads, self.state.params
        if kind in BLOCK_KINDS:
            subs = [
                self._make_layers(sub, f"{name}.", bn_allreduce) for sub in sub_plans(kind, attrs)
            ]
            return ResidualBlock(*subs) if kind == "residual" else InceptionBlock(subs)
        if kind in WEIGHT_KINDS:
            return self._weight_layer(name, kind, attrs)
        if kind == "bn":
            return BatchNormalization(
                p[f"{name}.gamma"],
                p[f"{name}.beta"],
                g[f"{name}.gamma"],
                g[f"{name}.beta"],
                st[f"{name}.running_mean"],
                st[f"{name}.running_var"],
                allreduce=bn_allreduce,
            )
        if kind == "pool":
            size = attrs["size"]
            return Pooling(size, size, stride=attrs.get("stride", size), pad=attrs.get("pad", 0))
        if kind == "dropout":
            return Dropout(attrs["ratio"], self.dropout_rng)
        if kind == "to_nhwc":
            return ToNHWC(attrs["input_shape"])
        return SIMPLE_LAYERS[kind]()

    def _weight_layer(self, name, kind, attrs):
        """Affine, Convolution or FusedConvolution over its views W, b, dW, db."""
        p, g = self.params, self.grads
        views = (p[f"{name}.W"], p[f"{name}.b"], g[f"{name}.W"], g[f"{name}.b"])
        need_dx = attrs.get("need_dx", True)  # False for the first layer (builders)
        if kind == "affine":
            return Affine(*views, name=name, need_dx=need_dx)
        conv = {"stride": attrs["stride"], "pad": attrs["pad"], "need_dx": need_dx, "name": name}
        if kind == "conv":
            return Convolution(*views, **conv)
        return FusedConvolution(*views, **conv, pool=attrs["pool"], relu=attrs["relu"])

    # -- training -------------------------------------------------------------------------

    def forward(self, x, train=True, spans=None):
        """spans: None, or a recorder (`mpinet train --profile`, worker/profile.py) whose
        spans.layer(phase, name) ends a span after each layer; None costs nothing."""
        x = np.asarray(check_input(x), self.dtype)
        if spans is not None:
            return self._forward_spans(x, train, spans)
        for layer in self.layers.values():
            x = layer.forward(x, train)
        return x

    def loss(self, x, t, train=True, spans=None):
        """Mean loss of the batch (x, t), plus 0.5 * weight_decay * sum of W**2.

        spans: see forward; the loss layer and the decay term end a span named "loss"."""
        loss = self.loss_layer.forward(self.forward(x, train, spans), t)
        if self.weight_decay:
            loss += 0.5 * self.weight_decay * sum(float(np.vdot(W, W)) for W in self.decayed)
        if spans is not None:
            spans.layer("forward", "loss")
        return loss

    def backward(self, spans=None):
        """Backpropagate the last loss() into buffer.grad (weight decay included).

        spans: see forward; in backward order: "loss", each layer, "weight_decay"."""
        if spans is not None:
            return self._backward_spans(spans)
        dout = self.loss_layer.backward()
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        if self.weight_decay:
            self._add_weight_decay()

    def _forward_spans(self, x, train, spans):
        for name, layer in self.layers.items():
            x = layer.forward(x, train)
            spans.layer("forward", name)
        return x

    def _backward_spans(self, spans):
        dout = self.loss_layer.backward()
        spans.layer("backward", "loss")
        for name, layer in reversed(self.layers.items()):
            dout = layer.backward(dout)
            spans.layer("backward", name)
        if self.weight_decay:
            self._add_weight_decay()
            spans.layer("backward", "weight_decay")

    def layer_starts(self):
        """(name, offset of its first parameter) of every top-level layer holding parameters,
        in buffer order: where train.overlap may cut the gradient (cluster/overlap.py)."""
        starts = {}
        for name, (start, _) in self.buffer.offsets().items():
            starts.setdefault(name.split(".")[0], start)
        return list(starts.items())

    def _add_weight_decay(self):
        for W, dW in zip(self.decayed, self.decayed_grads, strict=True):
            dW += self.weight_decay * W

    def gradient(self, x, t):
        """The book's API: loss and backward, returning the gradients by name."""
        self.loss(x, t)
        self.backward()
        return self.grads

    # -- inference ------------------------------------------------------------------------

    def predict(self, x, batch_size=1000):
        """Scores (before softmax; the book's predict) in evaluation mode, batch by batch.

        (n, output_size) in the network's dtype: the argmax is the label (classify), the
        softmax the probabilities (predict_proba).
        """
        x = check_input(x)
        outs = [
            self.forward(x[i : i + batch_size], train=False) for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, self.spec.get("output_size", 10)))

    def classify(self, x, batch_size=1000):
        """The predicted labels, an int64 array (n,): the argmax of predict's scores."""
        return self.predict(x, batch_size).argmax(axis=1).astype(np.int64)

    def predict_proba(self, x, batch_size=1000):
        """Softmax of predict's scores: (n, output_size), each row sums to 1."""
        return softmax(self.predict(x, batch_size))

    def evaluate(self, x, t, batch_size=1000):
        """(sum of per-sample losses, number correct, count): sums, so ranks can add them.

        The loss is the network's own (loss_layer), as in training.
        """
        loss_sum, correct = 0.0, 0
        x = check_input(x)
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size], np.asarray(t[i : i + batch_size])
            y = self.forward(xb, train=False)
            loss_sum += self.loss_layer.forward(y, tb) * len(xb)
            labels = tb.argmax(axis=1) if tb.ndim == 2 else tb
            correct += int(np.sum(y.argmax(axis=1) == labels))
        return loss_sum, correct, len(x)

    def accuracy(self, x, t, batch_size=1000):
        _, correct, n = self.evaluate(x, t, batch_size)
        return correct / n if n else 0.0


def check_input(x):
    """x as an array, refused with one line if it holds integers (0..255 pixels, say).

    Why: np.asarray(x, float32) would turn 255 into 255.0 and the net, trained on [0, 1],
    would silently answer nonsense. Labels t are integers and never pass through here.
    """
    if not hasattr(x, "dtype"):  # a list; arrays (and h5py datasets) are not copied here
        x = np.asarray(x)
    if x.dtype == np.uint8:
        raise ValueError(
            "Network input: got uint8 pixels (0..255); expected floats in [0, 1]; "
            "divide by 255 first (x / 255), as mpinet's data pipeline does"
        )
    if x.dtype.kind in "iu":
        raise ValueError(
            f"Network input: got {x.dtype} integers; expected floats (pixels in "
            f"[0, 1]); convert first: x / 255 for 0..255 pixels, else "
            f"x.astype(np.float32)"
        )
    return x


def plan_input_layout(plan):
    """'flat' when the plan's first layer with weights is an Affine (rows of features, mlp),
    else 'image' (a CNN: (N, C, H, W) maps, or their C*H*W values per row)."""
    first = next(kind for _, kind, _ in walk(plan) if kind in WEIGHT_KINDS)
    return "flat" if first == "affine" else "image"


def _param_specs(plan):
    """(trainable specs, state specs) in plan order, e.g. ("conv1.W", (16, 1, 3, 3)); a
    block's in its place, by full name ("block2.conv1.W")."""
    params, state = [], []
    for name, kind, attrs in walk(plan):
        if kind == "affine":
            params += [(f"{name}.W", attrs["shape"]), (f"{name}.b", (attrs["shape"][1],))]
        elif kind in ("conv", "fused_conv"):
            params += [(f"{name}.W", attrs["shape"]), (f"{name}.b", (attrs["shape"][0],))]
        elif kind == "bn":
            size = attrs["size"]
            params += [(f"{name}.gamma", (size,)), (f"{name}.beta", (size,))]
            state += [(f"{name}.running_mean", (size,)), (f"{name}.running_var", (size,))]
    return params, state
