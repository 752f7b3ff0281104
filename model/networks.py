"""Networks built from a spec: the book's MultiLayerNetExtend, SimpleConvNet and DeepConvNet.

A spec is a dict (the config's [model] section), e.g. {"name": "deep_cnn", "dropout": 0.0};
model/spec.py fills in the book's values and checks every key. Building goes in three steps:
1. a *plan*: the ordered list of layers with their sizes (pure data, easy to print);
2. one ParamBuffer for every trainable array of the plan (and one for BatchNorm state);
3. the layers, each handed its views into the buffers.
"""

import numpy as np

from .im2col import conv_output_size
from .network import Network
from .spec import resolve_spec


def _mlp_plan(s):
    sizes = [int(np.prod(s["input_shape"]))] + list(s["hidden"])
    plan = []
    for i in range(1, len(sizes)):
        plan.append((f"affine{i}", "affine", {"shape": (sizes[i - 1], sizes[i])}))
        if s["batchnorm"]:
            plan.append((f"bn{i}", "bn", {"size": sizes[i]}))
        plan.append((f"{s['activation']}{i}", s["activation"], {}))
        if s["dropout"]:
            plan.append((f"dropout{i}", "dropout", {"ratio": s["dropout"]}))
    n = len(sizes)
    plan.append((f"affine{n}", "affine", {"shape": (sizes[-1], s["output_size"])}))
    return plan


def _conv_block(plan, i, s, c_in, hw, filters, size, pad, stride):
    plan.append(
        (f"conv{i}", "conv", {"shape": (filters, c_in, size, size), "pad": pad, "stride": stride})
    )
    if s["batchnorm"]:
        plan.append((f"bn_conv{i}", "bn", {"size": filters}))
    plan.append((f"relu_conv{i}", "relu", {}))
    return conv_output_size(hw, size, stride, pad)


def _simple_cnn_plan(s):
    c, h, _ = s["input_shape"]
    plan = [("to_nhwc", "to_nhwc", {"input_shape": tuple(s["input_shape"])})]
    h = _conv_block(plan, 1, s, c, h, s["filters"], s["filter_size"], s["pad"], s["stride"])
    plan.append(("pool1", "pool", {"size": 2}))
    h //= 2
    _classifier(plan, s, s["filters"] * h * h)
    return plan


def _classifier(plan, s, features):
    """flatten - affine(hidden) - [bn] - relu - [dropout] - affine(classes): both CNNs' head."""
    plan.append(("flatten", "flatten", {}))
    plan.append(("affine1", "affine", {"shape": (features, s["hidden"])}))
    if s["batchnorm"]:
        plan.append(("bn1", "bn", {"size": s["hidden"]}))
    plan.append(("relu1", "relu", {}))
    if s["dropout"]:
        plan.append(("dropout1", "dropout", {"ratio": s["dropout"]}))
    plan.append(("affine2", "affine", {"shape": (s["hidden"], s["output_size"])}))


def _deep_cnn_plan(s):
    c, h, _ = s["input_shape"]
    f = s["filters"]
    plan = [("to_nhwc", "to_nhwc", {"input_shape": tuple(s["input_shape"])})]
    c_in = c
    for i in range(6):  # conv-conv-pool three times; the book pads conv4 by 2
        h = _conv_block(plan, i + 1, s, c_in, h, f[i], 3, 2 if i == 3 else 1, 1)
        c_in = f[i]
        if i % 2 == 1:
            plan.append((f"pool{i // 2 + 1}", "pool", {"size": 2}))
            h //= 2
    _classifier(plan, s, f[5] * h * h)
    if s["dropout"]:  # the book's DeepConvNet also drops out of the final scores
        plan.append(("dropout2", "dropout", {"ratio": s["dropout"]}))
    return plan


PLANS = {"mlp": _mlp_plan, "simple_cnn": _simple_cnn_plan, "deep_cnn": _deep_cnn_plan}


def build(spec, dtype="float32", seed=0, dropout_seed=None, bn_allreduce=None):
    """Build the network a spec describes; weights drawn from default_rng(seed).

    dropout_seed seeds the dropout masks (the worker passes (seed, rank)); bn_allreduce,
    a callable summing a float64 array across ranks in place, makes BatchNorm synchronised.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    full = resolve_spec(spec)
    plan = PLANS[full["name"]](full)
    return Network(
        plan, full, dtype=dtype, seed=seed, dropout_seed=dropout_seed, bn_allreduce=bn_allreduce
    )
