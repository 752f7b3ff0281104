"""What a checkpoint file holds: its layout, every attribute's rule, its checksums; once.

    /params/<name>            the trainable arrays by name, the book's shapes (conv1.W (FN, C,
                              FH, FW)); each dataset's sha256 attribute: the hash of its bytes
    /state/<name>             arrays that are state but not trained (BatchNorm running mean/var)
    /optimizer/<key>          the optimizer's flat state arrays ("m", "v" for Adam)
    /optimizer attributes     name, iter, the optimizer's hyper-parameters (lr, beta1, ...)
    root, written by save()   format_version, model_spec (JSON), dtype, created, the versions
                              of mpinet/numpy/h5py, weights (16-bit exports), meta_sha256
    root, the caller's meta   META below: step (required), epoch, world_size, config, ...

save() refuses a `meta` this schema does not allow, and read() refuses a file holding any
attribute outside it, so every file save() writes validates and nothing unchecked is read.
meta_sha256 is a sha256 over a canonical text of the other root attributes and the
/optimizer attributes (node, name, type, value), so the metadata is covered by a checksum
as each array is by its own.
Format 1 files (before meta_sha256) are read with every other rule the same.
"""

import hashlib
import json
import re

import h5py
import numpy as np

from ..optimizers import OPTIMIZERS
from .rules import (
    Rule,
    describe,
    is_number,
    iso_time,
    json_text,
    plain,
    rng_states,
    running_sums,
    toml_text,
    world_sizes,
)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no meta_sha256
GROUPS = ("params", "state", "optimizer")  # optimizer: absent when none was saved
HYPERPARAMETERS = ("lr", "momentum", "decay_rate", "beta1", "beta2", "eps")
CORRUPT = "the file is corrupt, use an earlier checkpoint"
HEX64 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


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
        str, "JSON text of a list of integers >= 1 (one per leg)", json_text(world_sizes)
    ),
    "config": Rule(str, "TOML text", toml_text),
    "dropout_rngs": Rule(
        str,
        "JSON text of a list of NumPy bit-generator states, one per rank",
        json_text(rng_states),
    ),
    "running": Rule(
        str,
        "JSON text of a list of [loss sum, correct, samples] >= 0 per rank",
        json_text(running_sums),
    ),
    "train_seconds": SECONDS,
    "elapsed_seconds": SECONDS,
    "total_steps": POSITIVE,
    "data_fingerprint": DIGEST,
    "pixel_mean": Rule(float, "a finite float", None),
    "pixel_std": Rule(float, "a finite float > 0", lambda v: v > 0),
    "test_accuracy": Rule(float, "a float in [0, 1]", lambda v: 0 <= v <= 1),
    "init_from": TEXT,  # train.init_from: the checkpoint file the run started from
    "init_from_sha256": DIGEST,  # and its sha256
}
REQUIRED_META = ("step",)

# The root attributes save() writes itself; meta may not use these names.
WRITTEN = {
    "format_version": Rule(int, "1 or 2", lambda v: v in READABLE_VERSIONS),
    "model_spec": Rule(
        str, "JSON text of a model spec object", json_text(lambda v: isinstance(v, dict))
    ),
    "dtype": Rule(str, "float32 or float64", lambda v: v in ("float32", "float64")),
    "created": Rule(str, "an ISO 8601 date and time", iso_time),
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
                f"model/checkpoint/schema.py or leave it out"
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
    if rule is not None and rule.kind is float and is_number(value):
        value = float(value)
    return value


# -- checksums ----------------------------------------------------------------------------


def sha256(array):
    """The sha256 attribute of a dataset: the hash of the array's bytes in C order."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


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
