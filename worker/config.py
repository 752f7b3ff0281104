"""Training configuration: one frozen dataclass per TOML section.

Sources, later wins: the defaults below < (resuming: the run's own config) < `--config
FILE.toml` < `--set section.key=value`. An unknown key, a value of the wrong type or out of
range is a one-line error naming the key (model keys are checked by model/spec.py), before
anything is written. Every rank resolves the same config; the worker compares a hash of it.
"""

import ast
import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

from mpinet.model.spec import resolve_spec


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
    eval_split: str = "test"  # what evaluations score: test, or val (a file made with --val N)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"  # mlp | simple_cnn | deep_cnn
    dtype: str = "float32"  # float32 | float64
    # He init for every model: the book's SimpleConvNet uses std 0.01, which trains the
    # default simple_cnn job to 98.1% in 3 epochs where He init reaches 98.8%.
    init: str | float | None = "he"
    # The rest: None = the book's value for this model (model/spec.py; README, "Model spec
    # keys"). The resolved config (config.toml, --print-config) spells every one out.
    hidden: list | int | None = None
    activation: str | None = None
    batchnorm: bool | None = None
    dropout: float | None = None
    weight_decay: float | None = None
    filters: list | int | None = None
    filter_size: int | None = None
    pad: int | None = None
    stride: int | None = None
    loss: str | None = None
    input_shape: list | None = None
    output_size: int | None = None
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
    stop_after: int = 0  # stop (checkpointed) after this step, the schedule unchanged; 0 = off
    checkpoint_every: int = 0  # also checkpoint every N steps (always at epoch ends)
    keep_last: int = 3  # checkpoints kept (0 = all)
    keep_best: bool = False  # also keep the one with the best test accuracy
    check_every: int = 0  # compare a parameter checksum across ranks every N steps; 0 = off
    collective_timeout: float = 300.0  # seconds a collective may stall before the job aborts
    blas_threads: int = 0  # BLAS threads per rank; 0 = cores on this node / ranks on it
    plots: bool = True  # draw loss, accuracy, confusion and misclassified PNGs at the end
    fail_rank: int = -1  # fault injection for tests: raise on this rank ...
    fail_step: int = -1  # ... at this step,
    fail_kind: str = "raise"  # ... by raising an exception; "kill": SIGKILL; "diverge": a nudge


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
    "data.eval_split": ("test", "val"),
    "model.dtype": ("float32", "float64"),
    "optim.name": ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
    "optim.schedule": ("constant", "step", "cosine"),
    "train.fail_kind": ("raise", "kill", "diverge"),
}
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
    "train.fail_rank",
    "train.fail_step",
    "train.fail_kind",
    "metrics.port",
    "metrics.host",
    "metrics.job",
    "metrics.pushgateway",
)
# Fault injection is for one leg only: a resumed run does not inherit it.
PER_LEG = ("train.fail_rank", "train.fail_step", "train.fail_kind")
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
        _merge(values, _parse_toml(text, name), source=name)
        for key in PER_LEG:
            section, item = key.split(".")
            values[section].pop(item, None)
        start = _build(values)
    if path:
        _merge(values, _read_toml(path), source=f"config file {path}")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(
                f"--set {item}: not section.key=value; expected e.g. --set train.epochs=5"
            )
        section, name = key.strip().split(".", 1)
        _merge(values, {section: {name: _parse_value(text.strip())}}, source="--set")
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


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config file {path}: no such file; expected a .toml file; "
            f"pass an existing file to --config"
        ) from None
    except OSError as e:
        raise OSError(
            f"config file {path}: {e.strerror or e}; expected a readable .toml "
            f"file; check the path and its permissions"
        ) from None
    return _parse_toml(text, f"config file {path}")


def _parse_toml(text, name):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(
            f"{name}: not valid TOML ({e}); expected sections such as "
            f"[train] with key = value lines; fix the file"
        ) from None


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
            raise ValueError(
                f"config section [{section}] ({source}): unknown; expected one "
                f"of {', '.join(SECTIONS)}{_did_you_mean(section, SECTIONS)}"
            )
        if not isinstance(items, dict):
            raise ValueError(
                f"config section [{section}] ({source}): got a value; expected a table of keys"
            )
        valid = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in items.items():
            if key not in valid:
                keys = [f"{section}.{k}" for k in valid]
                raise ValueError(
                    f"config key {section}.{key} ({source}): unknown; expected "
                    f"one of {', '.join(keys)}"
                    f"{_did_you_mean(f'{section}.{key}', keys)}"
                )
            values[section][key] = _typed(f"{section}.{key}", value, valid[key].type, source)


# Names other tools use, so that a user coming from them is pointed at ours.
SYNONYMS = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "epoch": "epochs",
    "batch": "batch_size",
    "steps": "max_steps",
    "optimizer": "name",
    "model": "name",
}


def _did_you_mean(name, valid):
    """'; did you mean train.epochs?' for the nearest valid name (typos and synonyms)."""
    section, _, key = name.rpartition(".")
    prefix = f"{section}." if section else ""
    keys = [v.removeprefix(prefix) for v in valid]
    synonyms = {k: v for k, v in SYNONYMS.items() if v in keys}
    near = get_close_matches(key, keys + list(synonyms), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{synonyms.get(near[0], near[0])}?" if near else ""


def _typed(key, value, annotation, source):
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
    names = " or ".join(TYPE_NAMES.get(a, a.__name__) for a in allowed)
    raise ValueError(f"config key {key} ({source}): got {value!r}; expected {names}")


TYPE_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    type(None): "unset",
}


def _build(values):
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections)
    _validate(config)
    return config


def _validate(config):
    flat = _flat(config)
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            valid = ", ".join(repr(c) for c in choices if c is not None)
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
    try:
        model_spec(config)
    except ValueError as e:
        raise ValueError(f"config key {e}") from None
    if config.model.loss not in (None, "softmax"):
        raise ValueError(
            f"config key model.loss: got {config.model.loss!r}; expected "
            f"'softmax': mpinet train classifies digits (mse is for regression "
            f"with the Python API)"
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
    """RUN_DIR/config.toml, written through a temporary name (never half a file)."""
    path = Path(run_dir) / "config.toml"
    tmp = path.with_name(".config.toml.tmp")
    tmp.write_text(to_toml(config))
    tmp.replace(path)
    return path
