"""Networks built from a spec: the book's MultiLayerNetExtend, SimpleConvNet and DeepConvNet.

A spec is a dict (the config's [model] section), e.g. {"name": "deep_cnn", "dropout": 0.0}.
Every key defaults to the book's value. Building goes in three explicit steps:
1. a *plan*: the ordered list of layers with their sizes (pure data, easy to print);
2. one ParamBuffer for every trainable array of the plan (and one for BatchNorm state);
3. the layers, each handed its views into the buffers.
"""

import numpy as np

from .im2col import conv_output_size
from .network import Network

ACTIVATIONS = ("relu", "sigmoid", "tanh")

COMMON = {"init": "he", "batchnorm": False, "dropout": 0.0, "weight_decay": 0.0,
          "input_shape": [1, 28, 28], "output_size": 10}
DEFAULTS = {
    # MultiLayerNetExtend; the book's examples use 784-100-100-100-100-10 style nets.
    "mlp": {**COMMON, "hidden": [100, 100, 100, 100], "activation": "relu", "loss": "softmax"},
    # SimpleConvNet: conv(30, 5x5) - relu - pool - affine(100) - relu - affine(10), std 0.01.
    "simple_cnn": {**COMMON, "init": 0.01, "filters": 30, "filter_size": 5, "pad": 0,
                   "stride": 1, "hidden": 100},
    # DeepConvNet of chapter 8: six 3x3 convs (conv4 padded by 2), dropout 0.5 after both affines.
    "deep_cnn": {**COMMON, "filters": [16, 16, 32, 32, 64, 64], "hidden": 50, "dropout": 0.5},
}


def resolve_spec(spec):
    """Fill in the book's defaults and reject unknown keys with the list of valid ones."""
    spec = dict(spec)
    name = spec.pop("name", "mlp")
    if name not in DEFAULTS:
        raise ValueError(f"model.name must be one of {sorted(DEFAULTS)}, got {name!r}")
    unknown = sorted(set(spec) - set(DEFAULTS[name]))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for model '{name}'; "
                         f"valid keys: {sorted(DEFAULTS[name])}")
    full = {"name": name, **DEFAULTS[name], **spec}
    if not 0 <= full["dropout"] < 1:
        raise ValueError(f"model.dropout must be in [0, 1), got {full['dropout']}")
    if full["weight_decay"] < 0:
        raise ValueError(f"model.weight_decay must be >= 0, got {full['weight_decay']}")
    if name == "mlp" and full["activation"] not in ACTIVATIONS:
        raise ValueError(f"model.activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {full['activation']!r}")
    return full


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
    plan.append((f"conv{i}", "conv", {"shape": (filters, c_in, size, size),
                                      "pad": pad, "stride": stride}))
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
    if len(f) != 6:
        raise ValueError(f"model.filters for deep_cnn must list 6 filter counts, got {f}")
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
    return Network(plan, full, dtype=dtype, seed=seed, dropout_seed=dropout_seed,
                   bn_allreduce=bn_allreduce)
