"""Training configuration: defaults < (resuming: the run's own config) < `--config FILE.toml`
< `--set section.key=value`, validated, and written back as the resolved TOML.

    sections.py     the dataclasses: one per TOML section, with the defaults
    config_read.py  TOML and --set values checked against them as they are merged
    config.py       the rules (CHOICES, ranges, what a resume may change), load_config,
                    the resolved config as TOML (config.toml, --print-config) and its hash

An unknown key, a value of the wrong type or out of range is a one-line error naming the key
(model keys are checked by model/spec.py), before anything is written. Every rank resolves
the same config; the worker compares a hash of it.
"""

import dataclasses
import hashlib
from pathlib import Path

from mpinet.cluster.wire import WIRE_DTYPES
from mpinet.data.atomic import replace_text
from mpinet.data.batches import DTYPES, NORMALIZE, ORDERS
from mpinet.data.sources import DATASETS
from mpinet.model import MODEL_NAMES
from mpinet.model.optimizers import OPTIMIZERS
from mpinet.model.schedules import SCHEDULES
from mpinet.model.spec import resolve_spec

from .config_read import merge, parse_override, parse_toml, read_toml
from .profile import parse_profile
from .sections import (
    SECTIONS,
    Config,
    DataConfig,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)

__all__ = [
    "CHOICES",
    "SECTIONS",
    "Config",
    "DataConfig",
    "MetricsConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "as_dict",
    "config_hash",
    "load_config",
    "model_spec",
    "resolved",
    "to_toml",
    "write_config",
]

# The allowed values of each key, taken from the code that implements them: a data set,
# order, optimizer or schedule added there is a valid config value at once.
CHOICES = {
    "data.dataset": DATASETS,
    "data.order": ORDERS,
    "data.normalize": NORMALIZE,
    "data.eval_split": ("test", "val"),  # the splits an evaluation may score: never train
    "model.name": MODEL_NAMES,
    "model.dtype": DTYPES,
    "optim.name": tuple(OPTIMIZERS),
    "optim.schedule": SCHEDULES,
    "train.allreduce_dtype": tuple(WIRE_DTYPES),
    "data.prefetch": ("auto", True, False),
}
# model.name is checked by model_spec() in _validate, whose message lists the models itself.
CHECKED_BY_SPEC = ("model.name",)
POSITIVE = (
    "optim.lr",
    "optim.accumulate",
    "optim.step_size",
    "train.epochs",
    "train.batch_size",
    "train.log_every",
    "train.collective_timeout",
)
NON_NEGATIVE = (
    "data.shift",
    "data.train_limit",
    "data.rotate",
    "optim.warmup_steps",
    "optim.clip_norm",
    "optim.min_lr",
    "train.eval_every",
    "train.max_steps",
    "train.stop_after",
    "train.check_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.blas_threads",
)


# Lists of parameter-name prefixes ("conv1" matches conv1.W and conv1.b): worker/transfer.py.
PREFIXES = ("train.freeze", "train.init_skip")

# Keys a resumed run may change (`--resume` with --config/--set on top of the run's own
# config): how long it runs, how often it reports, where it finds its data file (the data's
# fingerprint is checked anyway), metrics. Every other key alters the model, the data or
# the optimizer state, and a resume refuses to change it.
RESUMABLE = (
    "data.path",
    "data.source",
    "data.prefetch",
    "train.epochs",
    "train.max_steps",
    "train.stop_after",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.keep_best",
    "train.check_every",
    "train.collective_timeout",
    "train.blas_threads",
    "train.plots",
    "train.profile",
    "metrics.port",
    "metrics.host",
    "metrics.job",
    "metrics.pushgateway",
    "metrics.trial",
)
# Keys that runs of earlier versions stored (fault injection, now tests/faulty_mpinet.py):
# dropped from a resumed run's config so that its checkpoints still resume.
RETIRED = ("train.fail_rank", "train.fail_step", "train.fail_kind")
WHAT_CHANGES = {
    "data": "the data",
    "model": "the model",
    "optim": "the optimizer state",
    "train": "the training sequence",
}


def load_config(path=None, overrides=(), base=None):
    """defaults < `base` < TOML file < `section.key=value` overrides -> a validated Config.

    base: (TOML text, its name) of a run's own config, when resuming; the file and the
    overrides may then change only the RESUMABLE keys (a ValueError names any other).
    """
    values = {name: {} for name in SECTIONS}
    if base is not None:
        text, name = base
        stored = parse_toml(text, name)
        for key in RETIRED:
            section, item = key.split(".")
            stored.get(section, {}).pop(item, None)
        merge(values, stored, source=name)
        start = _build(values)
    if path:
        merge(values, read_toml(path), source=f"config file {path}")
    for item in overrides:
        merge(values, parse_override(item), source="--set")
    config = _build(values)
    if base is not None:
        _check_resumable(start, config, base[1])
    return config


def _check_resumable(before, after, name):
    old, new = _flat(before), _flat(after)
    for key in old:
        if key not in RESUMABLE and old[key] != new[key]:
            what = WHAT_CHANGES[key.split(".")[0]]
            raise ValueError(
                f"config key {key}: {_toml_value(new[key])} on resume, the run "
                f"has {_toml_value(old[key])} ({name}); expected it unchanged: it "
                f"alters {what}; start a new run with another --run-dir"
            )


def _flat(config):
    return {
        f"{section}.{key}": value
        for section, items in as_dict(config).items()
        for key, value in items.items()
    }


def _build(values):
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections)
    _validate(config)
    return config


def _validate(config):
    flat = _flat(config)
    for key, choices in CHOICES.items():
        if key not in CHECKED_BY_SPEC and flat[key] not in choices:
            valid = ", ".join(str(c).lower() if isinstance(c, bool) else repr(c) for c in choices)
            raise ValueError(f"config key {key}: got {flat[key]!r}; expected one of {valid}")
    for key in POSITIVE + NON_NEGATIVE:
        if flat[key] < 0 or (key in POSITIVE and flat[key] == 0):
            bound = "> 0" if key in POSITIVE else ">= 0"
            raise ValueError(f"config key {key}: got {flat[key]}; expected a value {bound}")
    if config.metrics.port < -1 or config.metrics.port > 65535:
        raise ValueError(
            f"config key metrics.port: got {config.metrics.port}; expected -1 "
            f"(off), 0 (any free port) or a port number up to 65535"
        )
    _check_transfer(flat)
    _check_overlap(flat)
    try:
        model_spec(config)
        parse_profile(config.train.profile)
    except ValueError as e:
        raise ValueError(f"config key {e}") from None
    if config.model.loss not in (None, "softmax"):
        raise ValueError(
            f"config key model.loss: got {config.model.loss!r}; expected "
            f"'softmax': mpinet train classifies digits (mse is for regression "
            f"with the Python API)"
        )


def _check_overlap(flat):
    """train.overlap sends the float32 gradient of one backward: no 16-bit wire, no
    accumulated micro-batches (their sum is only complete after the last backward)."""
    if not flat["train.overlap"]:
        return
    for key, plain in (("train.allreduce_dtype", "float32"), ("optim.accumulate", 1)):
        if flat[key] != plain:
            raise ValueError(
                f"config key train.overlap: true with {key} = {flat[key]!r}; expected "
                f"{key} = {plain!r} with overlap; set one of them back"
            )


def _check_transfer(flat):
    """train.freeze and train.init_skip: lists of non-empty names; init_skip needs init_from."""
    for key in PREFIXES:
        bad = [p for p in flat[key] if not isinstance(p, str) or not p]
        if bad:
            raise ValueError(
                f"config key {key}: got {flat[key]!r}; expected a list of parameter-name "
                f'prefixes, e.g. ["conv1", "affine1"]'
            )
    if flat["train.init_skip"] and not flat["train.init_from"]:
        raise ValueError(
            f"config key train.init_skip: got {flat['train.init_skip']!r} without "
            f"train.init_from; expected it only with a checkpoint to start from; set "
            f"train.init_from (--init-from CKPT), or leave train.init_skip out"
        )


def as_dict(config):
    return dataclasses.asdict(config)


def model_spec(config):
    """The [model] section as a full spec for mpinet.model.build: every key spelled out
    with the book's value where the config leaves it unset (None)."""
    m = as_dict(config)["model"]
    skip = ("dtype", "sync_bn")
    return resolve_spec({k: v for k, v in m.items() if v is not None and k not in skip})


def resolved(config):
    """The config with every model key spelled out (what config.toml and --print-config show)."""
    spec = model_spec(config)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **spec))


def to_toml(config):
    """The resolved config as TOML text (unset values are left out: they mean 'default')."""
    lines = []
    for section, items in as_dict(resolved(config)).items():
        lines.append(f"[{section}]")
        for key, value in items.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def config_hash(config):
    return hashlib.sha256(to_toml(config).encode()).hexdigest()


def write_config(config, run_dir):
    """RUN_DIR/config.toml, written atomically (mpinet.data.atomic: never half a file)."""
    path = Path(run_dir) / "config.toml"
    replace_text(path, to_toml(config))
    return path
