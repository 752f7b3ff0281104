"""The sections of a training config: one frozen dataclass per TOML section, with defaults.

    [data] DataConfig   [model] ModelConfig   [optim] OptimConfig
    [train] TrainConfig   [metrics] MetricsConfig        -> Config

A field's annotation is the type its TOML value must have (worker/config_read.py checks it);
the allowed values and ranges are worker/config.py's CHOICES, POSITIVE and NON_NEGATIVE.
"""

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # the HDF5 file; "" = <cache>/<dataset>.h5, prepared when missing
    dataset: str = "mnist"  # a data set of data/sources.py (used when the file must be prepared)
    source: str = ""  # where `prepare` finds the IDX files (dir or URL); "" = env, cache, mirrors
    order: str = "shard"  # shard: each rank reads its own shard | global: -n 1/2/4 train the same
    augment: bool = False  # random shifts and rotations of training images
    shift: int = 2  # augmentation: largest shift, pixels
    rotate: float = 10.0  # augmentation: largest rotation, degrees
    normalize: str = "unit"  # unit: pixels / 255 | standard: zero mean, unit variance
    # a background thread prepares the next batch: true | false | "auto" (only augmented
    # batches: a plain one takes less time to make than the thread's hand-off)
    prefetch: bool | str = "auto"
    eval_split: str = "test"  # what evaluations score: test, or val (a file made with --val N)
    train_limit: int = 0  # train on a seeded class-balanced subset of N samples; 0 = all


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"  # one of mpinet.model.MODEL_NAMES
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
    convs: int | None = None  # vgg: 3x3 convolutions per stage (filters: one count per stage)
    stem: int | None = None  # googlenet: filters of the 3x3 stem convolution
    inception: list | None = None  # googlenet: blocks [1x1, 3x3r, 3x3, 5x5r, 5x5, pool proj]
    pool_after: list | None = None  # googlenet: block numbers followed by a 2x2 max pool
    double_3x3: bool | None = None  # googlenet: two 3x3 convs in place of each 5x5
    channels: list | None = None  # resnet: channels per stage (later stages: stride 2)
    blocks: list | None = None  # resnet: residual blocks per stage
    sync_bn: bool = False  # BatchNorm statistics of the global batch (allreduced)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # an optimizer of model/optimizers.py
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
    allreduce_dtype: str = "float32"  # the gradient's wire: float32 (as it is) | bfloat16 | float16
    overlap: bool = False  # start the gradient's mean in 4 buckets while backward goes on
    profile: str = ""  # "START:COUNT": trace steps START.. (from 0) to RUN_DIR/trace.json; "" = off
    blas_threads: int = 0  # BLAS threads per rank; 0 = cores on this node / ranks on it
    plots: bool = True  # draw loss, accuracy, confusion and misclassified PNGs at the end
    init_from: str = ""  # start from these weights (checkpoint, run dir, pointer); "" = off
    init_skip: list = field(default_factory=list)  # init_from: prefixes initialised fresh
    freeze: list = field(default_factory=list)  # prefixes of parameters no update moves


@dataclass(frozen=True)
class MetricsConfig:
    port: int = -1  # base port (rank r serves on port + local rank); -1 = off; 0 = any free
    host: str = "127.0.0.1"
    job: str = "mpinet"  # the `job` label
    pushgateway: str = ""  # Pushgateway URL; rank 0 push-adds the final summary; "" = off
    trial: int = -1  # `mpinet search` sets the trial's number: a `trial` label; -1 = none


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
