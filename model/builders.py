"""Networks built from a spec: the book's MultiLayerNetExtend, SimpleConvNet and DeepConvNet,
and chapter 8's VGG, GoogLeNet and ResNet (chapter8.py).

A spec is a dict (the config's [model] section), e.g. {"name": "deep_cnn", "dropout": 0.0};
model/spec.py fills in the book's values and checks every key. Building goes in four steps:
1. a *plan*: the ordered list of the book's layers, (name, kind, attrs) entries with their
   sizes (pure data, easy to print);
2. fuse_convolutions(plan): each conv, with the ReLU and 2x2 max pooling after it, becomes
   one fused_conv entry (FusedConvolution: the same values, faster), inside blocks too.
   build(spec, fuse=False) skips this step and trains the book's Convolution, Relu, Pooling;
3. one ParamBuffer for every trainable array of the plan (and one for BatchNorm state);
4. the layers, each handed its views into the buffers (network.Network).
"""

import numpy as np

from .blocks import BLOCK_KINDS, map_sub_plans
from .chapter8 import googlenet_plan, resnet_plan, vgg_plan
from .im2col import conv_output_size
from .network import Network, plan_input_layout
from .spec import resolve_spec


def _mlp_plan(spec):
    sizes = [int(np.prod(spec["input_shape"]))] + list(spec["hidden"])
    plan = []
    for i in range(1, len(sizes)):
        attrs = {"shape": (sizes[i - 1], sizes[i])}
        if i == 1:
            attrs["need_dx"] = False  # the gradient of the input itself is never used
        plan.append((f"affine{i}", "affine", attrs))
        if spec["batchnorm"]:
            plan.append((f"bn{i}", "bn", {"size": sizes[i]}))
        plan.append((f"{spec['activation']}{i}", spec["activation"], {}))
        if spec["dropout"]:
            plan.append((f"dropout{i}", "dropout", {"ratio": spec["dropout"]}))
    n = len(sizes)
    plan.append((f"affine{n}", "affine", {"shape": (sizes[-1], spec["output_size"])}))
    return plan


def _conv_block(plan, i, spec, c_in, hw, filters, size, pad, stride):
    attrs = {"shape": (filters, c_in, size, size), "pad": pad, "stride": stride}
    if i == 1:
        attrs["need_dx"] = False  # the gradient of the input itself is never used
    plan.append((f"conv{i}", "conv", attrs))
    if spec["batchnorm"]:
        plan.append((f"bn_conv{i}", "bn", {"size": filters}))
    plan.append((f"relu_conv{i}", "relu", {}))
    return conv_output_size(hw, size, stride, pad)


def _simple_cnn_plan(spec):
    c, h, _ = spec["input_shape"]
    plan = [("to_nhwc", "to_nhwc", {"input_shape": tuple(spec["input_shape"])})]
    filters = spec["filters"]
    h = _conv_block(plan, 1, spec, c, h, filters, spec["filter_size"], spec["pad"], spec["stride"])
    plan.append(("pool1", "pool", {"size": 2}))
    h //= 2
    _classifier(plan, spec, filters * h * h)
    return plan


def _classifier(plan, spec, features):
    """flatten - affine(hidden) - [bn] - relu - [dropout] - affine(classes): both CNNs' head."""
    plan.append(("flatten", "flatten", {}))
    plan.append(("affine1", "affine", {"shape": (features, spec["hidden"])}))
    if spec["batchnorm"]:
        plan.append(("bn1", "bn", {"size": spec["hidden"]}))
    plan.append(("relu1", "relu", {}))
    if spec["dropout"]:
        plan.append(("dropout1", "dropout", {"ratio": spec["dropout"]}))
    plan.append(("affine2", "affine", {"shape": (spec["hidden"], spec["output_size"])}))


def _deep_cnn_plan(spec):
    c, h, _ = spec["input_shape"]
    filters = spec["filters"]
    plan = [("to_nhwc", "to_nhwc", {"input_shape": tuple(spec["input_shape"])})]
    c_in = c
    for i in range(6):  # conv-conv-pool three times; the book pads conv4 by 2
        h = _conv_block(plan, i + 1, spec, c_in, h, filters[i], 3, 2 if i == 3 else 1, 1)
        c_in = filters[i]
        if i % 2 == 1:
            plan.append((f"pool{i // 2 + 1}", "pool", {"size": 2}))
            h //= 2
    _classifier(plan, spec, filters[5] * h * h)
    if spec["dropout"]:  # the book's DeepConvNet also drops out of the final scores
        plan.append(("dropout2", "dropout", {"ratio": spec["dropout"]}))
    return plan


# one per spec.MODEL_NAMES
PLANS = {
    "mlp": _mlp_plan,
    "simple_cnn": _simple_cnn_plan,
    "deep_cnn": _deep_cnn_plan,
    "vgg": vgg_plan,
    "googlenet": googlenet_plan,
    "resnet": resnet_plan,
}


def fuse_convolutions(plan):
    """The plan with each conv, and the 2x2 max pool and ReLU after it, as ONE fused_conv.

    First every relu -> pool pair becomes pool -> relu: max and ReLU commute (ReLU is
    non-decreasing), and so do their gradients: both orders route a window's gradient to its
    first maximum when it is positive, and nowhere when it is not; pooling first lets the
    ReLU run on maps a quarter of the size. Then each conv becomes a fused_conv entry that
    takes in a 2x2 pool (pool=True) and a ReLU (relu=True) right after it. A conv followed
    by BatchNorm takes in neither, and is still a fused_conv for its faster arithmetic.
    A block's sub-plans (a residual body, an Inception branch) are fused the same way, each
    on its own: a block is opaque to its neighbours, so nothing fuses across its edges.
    """
    swapped = list(plan)
    for i in range(len(swapped) - 1):
        if swapped[i][1] == "relu" and swapped[i + 1][1] == "pool":
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    fused = []
    for name, kind, attrs in swapped:
        conv = fused[-1][2] if fused and fused[-1][1] == "fused_conv" else None
        bare = conv is not None and not (conv["pool"] or conv["relu"])
        if kind in BLOCK_KINDS:
            fused.append((name, kind, map_sub_plans(kind, attrs, fuse_convolutions)))
        elif kind == "conv":
            fused.append((name, "fused_conv", {**attrs, "pool": False, "relu": False}))
        elif bare and kind == "pool" and _plain_2x2(attrs):
            conv["pool"] = True
        elif conv is not None and kind == "relu" and not conv["relu"]:
            conv["relu"] = True
        else:
            fused.append((name, kind, attrs))
    return fused


def _plain_2x2(pool):
    """A pool entry FusedConvolution can take in: 2x2 windows, stride 2, no padding."""
    return (pool["size"], pool.get("stride", 2), pool.get("pad", 0)) == (2, 2, 0)


def build(spec, dtype="float32", seed=0, dropout_seed=None, bn_allreduce=None, fuse=True):
    """Build the network a spec describes; weights drawn from default_rng(seed).

    dropout_seed seeds the dropout masks (the worker passes (seed, rank)); bn_allreduce,
    a callable summing a float64 array across ranks in place, makes BatchNorm synchronised.
    fuse=False keeps the book's layers (Convolution, Relu, Pooling), slower, same values.
    """
    spec = resolve_spec(_as_dict(spec))
    plan = PLANS[spec["name"]](spec)
    if fuse:
        plan = fuse_convolutions(plan)
    return Network(
        plan, spec, dtype=dtype, seed=seed, dropout_seed=dropout_seed, bn_allreduce=bn_allreduce
    )


def input_layout(spec):
    """'flat' (rows of C*H*W values) for a net whose first layer is an Affine (mlp), else
    'image' ((N, C, H, W) maps): Network.input_layout, known before building."""
    spec = resolve_spec(_as_dict(spec))
    return plan_input_layout(PLANS[spec["name"]](spec))


def _as_dict(spec):
    return {"name": spec} if isinstance(spec, str) else spec


# -- the book's class names, as functions returning a Network -------------------------------


def MultiLayerNetExtend(dtype="float32", seed=0, **spec):
    """The book's MultiLayerNetExtend (chapter 6), e.g. MultiLayerNetExtend(hidden=[100])."""
    return build({"name": "mlp", **spec}, dtype=dtype, seed=seed)


def SimpleConvNet(dtype="float32", seed=0, fuse=True, **spec):
    """The book's SimpleConvNet (chapter 7), e.g. SimpleConvNet(filters=30)."""
    return build({"name": "simple_cnn", **spec}, dtype=dtype, seed=seed, fuse=fuse)


def DeepConvNet(dtype="float32", seed=0, fuse=True, **spec):
    """The book's DeepConvNet (chapter 8), e.g. DeepConvNet(dropout=0.0)."""
    return build({"name": "deep_cnn", **spec}, dtype=dtype, seed=seed, fuse=fuse)
