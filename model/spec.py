"""The model spec: the book's defaults per network, and a check of every key's type and range.

A spec is a dict (the config's [model] section), e.g. {"name": "deep_cnn", "dropout": 0.0}.
resolve_spec() fills in the book's values and checks each key, so a wrong value is one line
naming `model.<key>` before any layer is built (not a traceback from deep inside a layer).
"""

from difflib import get_close_matches
from numbers import Real

from .im2col import conv_output_size
from .init import ALIASES

ACTIVATIONS = ("relu", "sigmoid", "tanh")
LOSSES = ("softmax", "mse")

COMMON = {
    "init": "he",
    "batchnorm": False,
    "dropout": 0.0,
    "weight_decay": 0.0,
    "input_shape": [1, 28, 28],
    "output_size": 10,
}
DEFAULTS = {
    # MultiLayerNetExtend; the book's examples use 784-100-100-100-100-10 style nets.
    "mlp": {**COMMON, "hidden": [100, 100, 100, 100], "activation": "relu", "loss": "softmax"},
    # SimpleConvNet: conv(30, 5x5) - relu - pool - affine(100) - relu - affine(10), std 0.01.
    "simple_cnn": {
        **COMMON,
        "init": 0.01,
        "filters": 30,
        "filter_size": 5,
        "pad": 0,
        "stride": 1,
        "hidden": 100,
    },
    # DeepConvNet of chapter 8: six 3x3 convs (conv4 padded by 2), dropout 0.5 after both affines.
    "deep_cnn": {**COMMON, "filters": [16, 16, 32, 32, 64, 64], "hidden": 50, "dropout": 0.5},
    # Chapter 8's tour, sized for 28x28 and two cores (model/chapter8.py). VGG: stages of
    # `convs` 3x3 convs with BatchNorm then a 2x2 pool (28 -> 14 -> 7 -> 3), dropout 0.5 in
    # the dense head as VGG's own.
    "vgg": {
        **COMMON,
        "batchnorm": True,
        "dropout": 0.5,
        "filters": [16, 32, 64],
        "convs": 2,
        "hidden": 128,
    },
    # GoogLeNet: a 3x3 stem and a pool (28 -> 14), Inception blocks given as GoogLeNet's
    # table rows [1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj], a 2x2 pool after the
    # blocks numbered in pool_after (14 -> 7), global average pooling, dropout 0.4 as v1.
    # BatchNorm after every conv as BN-Inception (v2): without it, 60 Adam steps on MNIST
    # took the loss from 2.4 to 1.9 only, with it to 1.0; batchnorm = false gives v1.
    "googlenet": {
        **COMMON,
        "batchnorm": True,
        "dropout": 0.4,
        "stem": 32,
        "inception": [[16, 16, 24, 4, 8, 8], [24, 24, 32, 8, 16, 16], [32, 32, 48, 8, 16, 16]],
        "pool_after": [2],
        "double_3x3": False,
    },
    # ResNet: a 3x3 stem, stages of `blocks` residual blocks with `channels` channels, each
    # later stage halving the maps (28 -> 14 -> 7); blocks [3, 3, 3] is He et al.'s ResNet-20.
    "resnet": {**COMMON, "batchnorm": True, "channels": [16, 32, 64], "blocks": [1, 1, 1]},
}
# The spec names build() knows (builders.PLANS has one plan each); the config's choices too.
MODEL_NAMES = tuple(DEFAULTS)


def resolve_spec(spec):
    """Fill in the book's defaults; reject unknown keys and wrong values, one line each."""
    spec = dict(spec)
    name = spec.pop("name", "mlp")
    if name not in DEFAULTS:
        raise ValueError(f"model.name: got {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(spec) - set(DEFAULTS[name]))
    if unknown:
        near = get_close_matches(unknown[0], DEFAULTS[name], n=1)
        hint = f"did you mean model.{near[0]}?" if near else "remove it"
        raise ValueError(
            f"model.{unknown[0]}: not a key of model '{name}'; expected one of "
            f"{', '.join(sorted(DEFAULTS[name]))}; {hint}"
        )
    full = {"name": name, **DEFAULTS[name], **spec}
    for key in DEFAULTS[name]:
        _check(name, key, full[key])
    if name == "simple_cnn":
        _check_conv_fits(full)
    if name in CHAPTER8_CHECKS:
        CHAPTER8_CHECKS[name](full)
    return full


def _check(name, key, value):
    """Raise ValueError 'model.<key>: got ...; expected ...' unless value fits the key."""
    expected = _problem(name, key, value)
    if expected:
        raise ValueError(f"model.{key}: got {value!r}; expected for {name}: {expected}")


def _problem(name, key, value):
    """What `value` should have been (text), or None when it is fine."""
    if key in CHAPTER8_KEYS or (key == "filters" and name == "vgg"):
        return _chapter8_problem(key, value)
    if key == "init":
        ok = value in ALIASES or (_number(value) and value > 0)
        return None if ok else f"one of {', '.join(ALIASES)} or a std > 0"
    if key == "batchnorm":
        return None if isinstance(value, bool) else "true or false"
    if key == "dropout":
        return None if _number(value) and 0 <= value < 1 else "a rate in [0, 1)"
    if key == "weight_decay":
        return None if _number(value) and value >= 0 else "a number >= 0"
    if key == "input_shape" and name == "mlp":  # flattened: any shape, e.g. [2] or [784]
        ok = _ints(value, minimum=1) and len(value) >= 1
        return None if ok else "a list of whole numbers >= 1, e.g. [1, 28, 28] or [2]"
    if key == "input_shape":
        ok = _ints(value, minimum=1) and len(value) == 3
        return None if ok else "[channels, height, width], whole numbers >= 1"
    if key in ("output_size", "filter_size", "stride"):
        return None if _int(value, minimum=1) else "a whole number >= 1"
    if key == "pad":
        return None if _int(value, minimum=0) else "a whole number >= 0"
    if key == "activation":
        return None if value in ACTIVATIONS else f"one of {', '.join(ACTIVATIONS)}"
    if key == "loss":
        return None if value in LOSSES else f"one of {', '.join(LOSSES)}"
    if key == "hidden" and name == "mlp":
        return None if _ints(value, minimum=1) else "a list of layer sizes >= 1, e.g. [100, 50]"
    if key == "hidden":
        return None if _int(value, minimum=1) else "one layer size >= 1, e.g. 100"
    if key == "filters" and name == "deep_cnn":
        ok = _ints(value, minimum=1) and len(value) == 6
        return None if ok else "a list of 6 filter counts >= 1"
    if key == "filters":
        return None if _int(value, minimum=1) else "a filter count >= 1, e.g. 30"
    return None


def _check_conv_fits(s):
    """SimpleConvNet's convolution and 2x2 pooling must leave at least one pixel."""
    _, h, w = s["input_shape"]
    out = min(
        conv_output_size(h, s["filter_size"], s["stride"], s["pad"]),
        conv_output_size(w, s["filter_size"], s["stride"], s["pad"]),
    )
    if out < 2:
        raise ValueError(
            f"model.filter_size: got {s['filter_size']} (pad {s['pad']}, stride "
            f"{s['stride']}); expected a convolution leaving >= 2x2 pixels of "
            f"the {h}x{w} input for the 2x2 pooling"
        )


CHAPTER8_KEYS = ("convs", "stem", "inception", "pool_after", "double_3x3", "channels", "blocks")


def _chapter8_problem(key, value):
    """_problem for the keys only vgg, googlenet and resnet have (and vgg's filters)."""
    if key in ("convs", "stem"):
        return None if _int(value, minimum=1) else "a whole number >= 1"
    if key == "double_3x3":
        return None if isinstance(value, bool) else "true or false"
    if key == "inception":
        ok = isinstance(value, list | tuple) and len(value) >= 1
        ok = ok and all(_ints(v, minimum=1) and len(v) == 6 for v in value)
        return None if ok else "a list of blocks [1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj]"
    if key == "pool_after":
        return None if _ints(value, minimum=1) else "a list of block numbers >= 1, e.g. [2]"
    return None if _ints(value, minimum=1) and len(value) >= 1 else "a list of counts >= 1"


def _check_pools_fit(s, pools, key):
    """`pools` 2x2 poolings of the input must leave at least one pixel."""
    _, h, w = s["input_shape"]
    if min(h, w) >> pools < 1:
        raise ValueError(
            f"model.{key}: got {s[key]!r}; expected at most {min(h, w).bit_length() - 1} 2x2 "
            f"poolings of the {h}x{w} input ({pools} halve it to nothing)"
        )


def _check_googlenet(s):
    blocks = len(s["inception"])
    if any(k > blocks for k in s["pool_after"]):
        raise ValueError(
            f"model.pool_after: got {s['pool_after']!r}; expected block numbers from 1 to "
            f"{blocks} (model.inception has {blocks} blocks)"
        )
    _check_pools_fit(s, 1 + len(set(s["pool_after"])), "pool_after")


def _check_resnet(s):
    if len(s["channels"]) != len(s["blocks"]):
        raise ValueError(
            f"model.blocks: got {s['blocks']!r}; expected one count per stage of "
            f"model.channels {s['channels']!r} ({len(s['channels'])} numbers)"
        )


CHAPTER8_CHECKS = {
    "vgg": lambda s: _check_pools_fit(s, len(s["filters"]), "filters"),
    "googlenet": _check_googlenet,
    "resnet": _check_resnet,
}


def _number(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def _int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _ints(value, minimum):
    return isinstance(value, list | tuple) and all(_int(v, minimum) for v in value)
