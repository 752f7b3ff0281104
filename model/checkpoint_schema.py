"""Every attribute a checkpoint file may hold: its name, its type and its range, defined once.

save() refuses a `meta` this schema does not allow, and read() refuses a file holding any
attribute outside it, so every file save() writes validates and nothing unchecked is read.

    root, written by save()   format_version, model_spec, dtype, created, the versions of
                              mpinet/numpy/h5py, meta_sha256 (format 2)
    root, the caller's meta   META below: step (required), epoch, world_size, config, ...
    /optimizer                name, iter, the optimizer's hyper-parameters
    every dataset             sha256 of its bytes

meta_sha256 is a sha256 over a canonical text of the other root attributes and the
/optimizer attributes (node, name, type, value), so the metadata is covered by a checksum
as each array is by its own.
Format 1 files (before meta_sha256) are read with every other rule the same.
"""

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime

import h5py
import numpy as np

from .optimizers import OPTIMIZERS

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no meta_sha256
HYPERPARAMETERS = ("lr", "momentum", "decay_rate", "beta1", "beta2", "eps")
CORRUPT = "the file is corrupt, use an earlier checkpoint"
HEX64 = re.compile(r"[0-9a-f]{64}")
# The bit generators a NumPy Generator may hold: a stored state is tried on a fresh one.
BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Rule:
    """What one attribute must be: a Python type as h5py reads it, then a range check."""

    kind: type  # int, float or str
    expected: str  # for the message: "an integer >= 0"
    valid: object = None  # value -> truthy when it is in range; None: any value of `kind`

    def fits(self, value):
        if not _of_kind(value, self.kind):
            return False
        return self.valid is None or bool(self.valid(value))


def _of_kind(value, kind):
    if isinstance(value, bool | np.bool_):
        return False  # a bool is an int to Python; never to this schema
    if kind is float:
        return isinstance(value, float) and math.isfinite(value)
    return isinstance(value, kind)


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json(check):
    """A validator of JSON text whose parsed value must pass `check`."""

    def valid(text):
        try:
            return check(json.loads(text))
        except ValueError:
            return False

    return valid


def _toml(text):
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _iso(text):
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _world_sizes(value):
    return (
        isinstance(value, list)
        and len(value) >= 1
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)
    )


def _running(value):
    """Per rank: the training loss sum, correct count and sample count since the last eval."""
    return (
        isinstance(value, list)
        and len(value) >= 1
        and all(
            isinstance(r, list) and len(r) == 3 and all(_number(x) and x >= 0 for x in r)
            for r in value
        )
    )


def _rng_states(value):
    """Per rank: a bit generator's state (an object, or rng_state()'s JSON text of one) that a
    fresh generator of its kind accepts."""
    return isinstance(value, list) and len(value) >= 1 and all(map(_rng_state, value))


def _rng_state(state):
    if isinstance(state, str):  # each state as JSON text of its own (rng_state()), as the
        try:  # training loop of formats 1 and 2 writes it
            state = json.loads(state)
        except ValueError:
            return False
    kind = BIT_GENERATORS.get(state.get("bit_generator")) if isinstance(state, dict) else None
    if kind is None:
        return False
    try:
        kind(0).state = state
    except (ValueError, TypeError, KeyError, OverflowError):
        return False
    return True


COUNT = Rule(int, "an integer >= 0", lambda v: v >= 0)
POSITIVE = Rule(int, "an integer >= 1", lambda v: v >= 1)
SECONDS = Rule(float, "a finite float >= 0", lambda v: v >= 0)
DIGEST = Rule(str, "64 lowercase hex digits (a sha256)", HEX64.fullmatch)
TEXT = Rule(str, "text", None)

# The caller's meta: what the training loop stores (docs/checkpoints.md has the meanings).
META = {
    "step": COUNT,
    "epoch": COUNT,
    "world_size": POSITIVE,
    "world_sizes": Rule(
        str, "JSON text of a list of integers >= 1 (one per leg)", _json(_world_sizes)
    ),
    "config": Rule(str, "TOML text", _toml),
    "dropout_rngs": Rule(
        str, "JSON text of a list of NumPy bit-generator states, one per rank", _json(_rng_states)
    ),
    "running": Rule(
        str, "JSON text of a list of [loss sum, correct, samples] >= 0 per rank", _json(_running)
    ),
    "train_seconds": SECONDS,
    "elapsed_seconds": SECONDS,
    "total_steps": POSITIVE,
    "data_fingerprint": DIGEST,
    "pixel_mean": Rule(float, "a finite float", None),
    "pixel_std": Rule(float, "a finite float > 0", lambda v: v > 0),
    "test_accuracy": Rule(float, "a float in [0, 1]", lambda v: 0 <= v <= 1),
}
REQUIRED_META = ("step",)

# The root attributes save() writes itself; meta may not use these names.
WRITTEN = {
    "format_version": Rule(int, "1 or 2", lambda v: v in READABLE_VERSIONS),
    "model_spec": Rule(
        str, "JSON text of a model spec object", _json(lambda v: isinstance(v, dict))
    ),
    "dtype": Rule(str, "float32 or float64", lambda v: v in ("float32", "float64")),
    "created": Rule(str, "an ISO 8601 date and time", _iso),
    "mpinet_version": TEXT,
    "numpy_version": TEXT,
    "h5py_version": TEXT,
    "meta_sha256": DIGEST,
}
# Optional, written by export: the arrays are stored in 16 bits (model/weights16.py).
WEIGHTS = {"weights": Rule(str, "float16 or bfloat16", lambda v: v in ("float16", "bfloat16"))}
ROOT = {**WRITTEN, **WEIGHTS, **META}
OPTIMIZER = {
    "name": Rule(str, f"one of {', '.join(sorted(OPTIMIZERS))}", OPTIMIZERS.__contains__),
    "iter": COUNT,
    **{key: Rule(float, "a finite float >= 0", lambda v: v >= 0) for key in HYPERPARAMETERS},
}
DATASET = {"sha256": DIGEST}


def required_root(version):
    """The root attributes a file of `version` must hold."""
    written = [k for k in WRITTEN if k != "meta_sha256" or version >= 2]
    return written + list(REQUIRED_META)


# -- checks -------------------------------------------------------------------------------


def check_attributes(where, node, attrs, rules, required=()):
    """Raise a one-line CheckpointError unless every attribute of `node` is in `rules`,
    fits its rule, and every `required` name is present. attrs: name -> plain value."""
    label = "attribute" if node == "/" else f"{node} attribute"
    for key, value in attrs.items():
        rule = rules.get(key)
        if rule is None:
            raise CheckpointError(
                f"{where}: {label} {key} is unknown; expected "
                f"{'only ' + ', '.join(rules) if rules else 'no attributes'}; "
                f"the file was not written by mpinet or was edited, use "
                f"another checkpoint"
            )
        if not rule.fits(value):
            raise CheckpointError(
                f"{where}: {label} {key} is {describe(value, rule)}; "
                f"expected {rule.expected}; {CORRUPT}"
            )
    missing = [key for key in required if key not in attrs]
    if missing:
        raise CheckpointError(
            f"{where}: {label} {missing[0]} is missing; expected "
            f"{rules[missing[0]].expected}; {CORRUPT}"
        )


def check_meta(meta):
    """The caller's meta for save(), checked against META; numbers as Python int/float.

    Raises CheckpointError (a ValueError) naming the key: a file save() writes must read.
    """
    where = "checkpoint meta"
    meta = {key: _python(key, value) for key, value in meta.items()}
    for key in meta:
        if key in WRITTEN:
            raise CheckpointError(
                f"{where}: key {key} is reserved; expected a key of "
                f"{', '.join(META)}; save() writes {key} itself, leave it out"
            )
        if key not in META:
            raise CheckpointError(
                f"{where}: key {key} is unknown; expected one of "
                f"{', '.join(META)}; add it to META in "
                f"model/checkpoint_schema.py or leave it out"
            )
    for key, value in meta.items():
        if not META[key].fits(value):
            raise CheckpointError(
                f"{where}: {key} is {describe(value, META[key])}; expected "
                f"{META[key].expected}; pass a value that fits"
            )
    for key in REQUIRED_META:
        if key not in meta:
            raise CheckpointError(
                f"{where}: {key} is missing; expected {META[key].expected}; "
                f"pass meta={{'{key}': ...}}"
            )
    return meta


def _python(key, value):
    """NumPy scalars as Python numbers, and ints as floats where the schema wants a float."""
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()
    rule = META.get(key)
    if rule is not None and rule.kind is float and _number(value):
        value = float(value)
    return value


def describe(value, rule=None, limit=60):
    """'-3', "'abc'", 'the text \'600\'': what an attribute holds, short, for a message;
    its type is named when it is not the one `rule` wants."""
    if isinstance(value, bool | np.bool_):
        return f"a boolean {bool(value)}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    if rule is not None and isinstance(value, rule.kind):
        return text
    kinds = {int: "an integer", float: "a float", str: "the text"}
    return f"{kinds.get(type(value), 'a ' + type(value).__name__)} {text}"


def plain(value):
    """An attribute as h5py reads it -> a plain Python value (str, int, float, bool)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def meta_digest(f):
    """sha256 over the root attributes (but meta_sha256) and the /optimizer attributes of an
    open file: (node, name, type, value), sorted, as compact JSON; 1 and 1.0 differ. The
    datasets are left out: each has its own sha256, and a missing one is reported as such."""
    items = [("/", key, value) for key, value in f.attrs.items() if key != "meta_sha256"]
    if isinstance(f.get("optimizer"), h5py.Group):
        items += [("/optimizer", key, value) for key, value in f["optimizer"].attrs.items()]
    canonical = []
    for node, key, value in sorted(items, key=lambda item: (item[0], item[1])):
        value = plain(value)
        if isinstance(value, np.ndarray):  # the schema refuses arrays; still hash them exactly
            value = [str(value.dtype), value.shape, value.tolist()]
        canonical.append([node, key, type(value).__name__, value])
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def node_kind(node):
    return "group" if isinstance(node, h5py.Group) else "dataset"
