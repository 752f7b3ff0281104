"""Training configuration: one frozen dataclass per TOML section.

Sources, later wins: the defaults below < `--config FILE.toml` < `--set section.key=value`.
An unknown key or a value of the wrong type is a one-line error naming the key and listing
the valid ones. Every rank resolves the same config; the worker compares a hash of it.
"""

import ast
import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # the HDF5 file; "" = <cache>/<dataset>.h5, prepared when missing
    dataset: str = "mnist"  # mnist | fashion-mnist (used when the file must be prepared)
    source: str = ""  # where `prepare` finds the IDX files (dir or URL); "" = env, cache, mirrors
    order: str = "shard"  # shard: each rank reads its own shard | global: -n 1/2/4 train the same
    augment: bool = False  # random shifts and rotations of training images
    shift: int = 2  # augmentation: largest shift, pixels
    rotate: float = 10.0  # augmentation: largest rotation, degrees
    normalize: str = "unit"  # unit: pixels / 255 | standard: zero mean, unit variance
    prefetch: bool = True  # prepare the next batch in a background thread


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"  # mlp | simple_cnn | deep_cnn
    dtype: str = "float32"  # float32 | float64
    # He init for every model: the book's SimpleConvNet uses std 0.01, which trains the
    # default simple_cnn job to 98.1% in 3 epochs where He init reaches 98.8%.
    init: str | float | None = "he"
    # The rest: None = the book's value for this model (see README, "Model spec keys").
    hidden: list | int | None = None
    activation: str | None = None
    batchnorm: bool | None = None
    dropout: float | None = None
    weight_decay: float | None = None
    filters: list | int | None = None
    sync_bn: bool = False  # BatchNorm statistics of the global batch (allreduced)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # sgd | momentum | nesterov | adagrad | rmsprop | adam
    lr: float = 0.001
    momentum: float = 0.9  # momentum, nesterov
    schedule: str = "cosine"  # constant | step | cosine
    warmup_steps: int = 0  # linear warmup over the first steps
    step_size: int = 1000  # schedule "step": decay every step_size steps
    gamma: float = 0.1  # schedule "step": decay factor
    min_lr: float = 0.0  # schedule "cosine": final learning rate
    clip_norm: float = 0.0  # clip the global gradient norm (after the allreduce); 0 = off
    scale_lr: bool = False  # linear scaling: lr * world_size (pair it with warmup_steps)
    accumulate: int = 1  # micro-batches per optimizer step (one allreduce per step)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 100  # the GLOBAL batch of one optimizer step, split across ranks
    seed: int = 0  # weights; (seed, epoch) data order; (seed, rank) dropout
    eval_every: int = 0  # also evaluate every N steps; 0 = at epoch ends only
    log_every: int = 50  # one progress line every N steps (when stderr is not a terminal)
    max_steps: int = 0  # stop after this many steps; 0 = no limit
    checkpoint_every: int = 0  # also checkpoint every N steps (always at epoch ends)
    keep_last: int = 3  # checkpoints kept (0 = all)
    keep_best: bool = False  # also keep the one with the best test accuracy
    check_every: int = 0  # compare a parameter checksum across ranks every N steps; 0 = off
    collective_timeout: float = 300.0  # seconds a collective may stall before the job aborts
    blas_threads: int = 0  # BLAS threads per rank; 0 = cores on this node / ranks on it
    fail_rank: int = -1  # fault injection for tests: raise on this rank ...
    fail_step: int = -1  # ... at this step,
    fail_kind: str = "raise"  # ... by raising an exception, or "kill": SIGKILL itself


@dataclass(frozen=True)
class MetricsConfig:
    port: int = -1  # base port (rank r serves on port + local rank); -1 = off; 0 = any free
    host: str = "127.0.0.1"
    job: str = "mpinet"  # the `job` label
    pushgateway: str = ""  # Pushgateway URL; rank 0 push-adds the final summary; "" = off


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}

CHOICES = {
    "data.dataset": ("mnist", "fashion-mnist"),
    "data.order": ("shard", "global"),
    "data.normalize": ("unit", "standard"),
    "model.name": ("mlp", "simple_cnn", "deep_cnn"),
    "model.dtype": ("float32", "float64"),
    "model.activation": ("relu", "sigmoid", "tanh", None),
    "optim.name": ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
    "optim.schedule": ("constant", "step", "cosine"),
    "train.fail_kind": ("raise", "kill"),
}
POSITIVE = ("optim.lr", "optim.accumulate", "optim.step_size", "train.epochs",
            "train.batch_size", "train.log_every", "train.collective_timeout")
NON_NEGATIVE = ("data.shift", "data.rotate", "optim.warmup_steps", "optim.clip_norm",
                "optim.min_lr", "train.eval_every", "train.max_steps", "train.check_every",
                "train.checkpoint_every", "train.keep_last",
                "train.blas_threads")


def load_config(path=None, overrides=()):
    """defaults < TOML file < `section.key=value` overrides -> a validated Config."""
    values = {name: {} for name in SECTIONS}
    if path:
        _merge(values, _read_toml(path), source=str(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        section, name = key.strip().split(".", 1)
        _merge(values, {section: {name: _parse_value(text.strip())}}, source="--set")
    return _build(values)


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist; pass an existing "
                                f".toml file to --config") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None


def _parse_value(text):
    """Python/TOML literals (1e-3, true, [100, 50], 'adam'); anything else is a string."""
    lowered = {"true": True, "false": False}.get(text.lower())
    if lowered is not None:
        return lowered
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _merge(values, new, source):
    for section, items in new.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config section [{section}] in {source}; "
                             f"valid sections: {', '.join(SECTIONS)}")
        if not isinstance(items, dict):
            raise ValueError(f"config: [{section}] in {source} must be a table of keys")
        valid = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in items.items():
            if key not in valid:
                raise ValueError(f"unknown config key '{section}.{key}' in {source}; valid "
                                 f"keys: {', '.join(f'{section}.{k}' for k in valid)}")
            values[section][key] = _typed(f"{section}.{key}", value, valid[key].type)


def _typed(key, value, annotation):
    """Check value against the field's annotation; ints are accepted where floats are."""
    allowed = getattr(annotation, "__args__", (annotation,))
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, int | float) and float in allowed:
        return float(value)
    elif isinstance(value, str | list) and type(value) in allowed:
        return value
    names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
    raise ValueError(f"config key '{key}' must be {names}, got {value!r}")


def _build(values):
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections)
    _validate(config)
    return config


def _validate(config):
    flat = as_dict(config)
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        if flat[section][name] not in choices:
            valid = ", ".join(repr(c) for c in choices if c is not None)
            raise ValueError(f"config key '{key}' must be one of {valid}, "
                             f"got {flat[section][name]!r}")
    for key in POSITIVE + NON_NEGATIVE:
        section, name = key.split(".")
        value = flat[section][name]
        if value < 0 or (key in POSITIVE and value == 0):
            bound = "> 0" if key in POSITIVE else ">= 0"
            raise ValueError(f"config key '{key}' must be {bound}, got {value}")
    if config.metrics.port < -1 or config.metrics.port > 65535:
        raise ValueError(f"config key 'metrics.port' must be -1 (off), 0 (any free port) or "
                         f"a port number, got {config.metrics.port}")


def as_dict(config):
    return dataclasses.asdict(config)


def model_spec(config):
    """The [model] section as a spec for mpinet.model.build (None = the book's default)."""
    m = as_dict(config)["model"]
    skip = ("dtype", "sync_bn")
    return {k: v for k, v in m.items() if v is not None and k not in skip}


def to_toml(config):
    """The resolved config as TOML text (None values are left out: they mean 'default')."""
    lines = []
    for section, items in as_dict(config).items():
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
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def config_hash(config):
    return hashlib.sha256(to_toml(config).encode()).hexdigest()


def write_config(config, run_dir):
    path = Path(run_dir) / "config.toml"
    path.write_text(to_toml(config))
    return path
