"""A training run around its loop: setup() -> Run, begin(), finish().

setup() only reads and checks: the data, the network, the optimizer, the metrics server,
the replicas made identical, a resumed checkpoint restored. A start that fails there leaves
no run directory behind. begin() commits the run directory (config.toml, the history files,
this leg's environment); finish() draws the plots and writes summary.json.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

from mpinet.cluster import (
    assert_same_config,
    assert_same_data,
    assert_same_layout,
    assert_same_params,
    fail_together,
)
from mpinet.data import fingerprint
from mpinet.data.subsets import describe_subset
from mpinet.model import build, optimizers
from mpinet.model.schedules import learning_rate

from .config import config_hash, model_spec
from .environment import describe
from .files import written
from .history import History
from .metrics import Metrics
from .preemption import Preemption
from .progress import Progress
from .resume import Clock, Resumed, make_checkpoint_dir, restore_checkpoint
from .start import commit, log_start, open_data, prepare_data, read_test_images
from .threads import blas_threads_for, pin_blas_threads
from .transfer import Frozen, init_from

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    """How many steps the run has, and the learning rate of each (lrs[step], a table)."""

    steps_per_epoch: int
    total_steps: int
    base_lr: float
    lrs: list = field(default_factory=list, repr=False)

    def lr(self, cfg, step, total_steps=None):
        o = cfg.optim
        total = total_steps or self.total_steps
        return learning_rate(
            step, self.base_lr, o.schedule, total, o.warmup_steps, o.step_size, o.gamma, o.min_lr
        )


@dataclass
class TrainingData:
    """The data file, how it came (found, converted, downloaded: the start's log line says),
    and what every checkpoint records of it (its fingerprint, the standardisation)."""

    path: str
    how: str
    meta: dict


@dataclass
class Run:
    """What the loop works with: setup() fills the first part, begin() the rest."""

    cfg: object
    comm: object
    net: object
    optimizer: object
    batches: object  # this rank's TrainBatches
    test: tuple  # this rank's (x, t) share of the evaluated split
    metrics: object
    schedule: Schedule
    resumed: Resumed
    data: TrainingData
    sums: object  # loop.TrainSums: training sums since the last evaluation
    micro_batches: object = None  # each step's micro-batches, from `step` on, across epochs
    checkpoints: object = None  # the run's CheckpointDir (rank 0)
    history: History = None
    progress: Progress = None
    preemption: Preemption = None
    clock: Clock = None
    world_sizes: list = field(default_factory=list)
    steps_done: int = 0  # the steps completed so far, counting earlier legs
    frozen: Frozen = None  # train.freeze (worker/transfer.py)
    source: dict = field(default_factory=dict)  # what checkpoints record of train.init_from

    @property
    def step(self):
        """The first step this leg runs (0, or the resumed checkpoint's)."""
        return self.resumed.step


def setup(cfg, comm, ckpt, sums):
    """Every rank: everything before the first step, writing nothing -> Run."""
    threads = blas_threads_for(comm.local_size, cfg.train.blas_threads)
    blas = pin_blas_threads(threads)
    log.info(
        "%d rank(s) (%s), %d BLAS thread(s) each: %s",
        comm.world_size,
        comm.library,
        threads,
        blas,
    )
    path, how = prepare_data(cfg, comm)
    data = TrainingData(path, how, {"data_fingerprint": fingerprint(path)})
    batches, x_test, t_test = open_data(cfg, comm, path)
    if batches.stats is not None:  # standardised inputs: inference needs the statistics
        data.meta.update(pixel_mean=batches.stats[0], pixel_std=batches.stats[1])
    net = build(
        model_spec(cfg),
        dtype=cfg.model.dtype,
        seed=cfg.train.seed,
        dropout_seed=(cfg.train.seed, comm.rank),
        bn_allreduce=comm.allreduce_sum_ if cfg.model.sync_bn else None,  # dist
    )
    frozen = Frozen(cfg, comm, net)  # train.freeze: the same ranges on every rank (checked)
    optimizer = optimizers.create(cfg.optim.name, frozen=frozen.params, **optimizer_kwargs(cfg))
    metrics = start_metrics(cfg, comm)
    source = init_from(cfg, comm, net, ckpt)  # rank 0 copies; make_identical broadcasts
    resumed = make_identical(cfg, comm, ckpt, net, optimizer, sums, data.meta)
    schedule = make_schedule(cfg, comm, batches)
    test = (x_test, t_test)
    if batches.subset is not None:
        log.info("data.train_limit: %s", describe_subset(batches.subset))
    run = Run(cfg, comm, net, optimizer, batches, test, metrics, schedule, resumed, data, sums)
    run.frozen, run.source = frozen, source
    return run


def make_identical(cfg, comm, ckpt, net, optimizer, sums, data_meta):
    """Every replica starts from rank 0's bits (dist): weights, or the checkpoint's state."""
    comm.broadcast_(net.buffer.data, root=0)  # dist: DDP and Horovod do the same at start
    if net.state.size:
        comm.broadcast_(net.state.data, root=0)  # dist
    assert_same_layout(comm, net.buffer.layout())  # dist
    assert_same_config(comm, config_hash(cfg))  # dist
    assert_same_data(comm, data_meta["data_fingerprint"])  # dist
    resumed = Resumed()
    if comm.bcast_object(ckpt is not None, root=0):  # dist
        resumed, values = restore_checkpoint(cfg, comm, ckpt, net, optimizer, data_meta)
        if values is not None:  # the same world size: this rank's sums carry over
            sums.loss, sums.correct, sums.samples = values
    assert_same_params(comm, net.buffer.data)  # dist
    return resumed


def begin(run, run_dir):
    """The start is accepted: rank 0 writes the run directory; the step iterator starts."""
    cfg, comm, step = run.cfg, run.comm, run.step
    run.checkpoints = make_checkpoint_dir(cfg, comm, run_dir)
    leg = describe(comm, step)  # dist: every rank's host
    source = run.resumed.source
    run.history = commit(cfg, comm, run_dir, lambda: History(run_dir, step, source), leg)
    log_start(cfg, comm, run.net, run.data, run.batches, run.schedule, run.resumed, run.metrics)
    run.world_sizes = run.resumed.world_sizes + [comm.world_size]
    run.clock = Clock(run.resumed.elapsed_seconds, run.resumed.train_seconds)
    total = run.schedule.total_steps
    run.progress = Progress(total, cfg.train.log_every, comm.is_root, run.history, done=step)
    run.preemption = Preemption()
    run.micro_batches = run.batches.steps(step, total, cfg.optim.accumulate)
    run.steps_done = step


def complete(run):
    """Whether the resumed run has nothing left to do (then nothing is written)."""
    if run.step < run.schedule.total_steps:
        return False
    log.info(
        "run already complete at step %d (%s); raise %s to continue",
        run.step,
        *limit(run.cfg, run.schedule),
    )
    run.metrics.close(None)
    return True


def finish(run, run_dir, stop):
    """After the last step of this leg: the plots (a finished run), summary.json -> summary."""
    cfg, comm, net, schedule = run.cfg, run.comm, run.net, run.schedule
    run.micro_batches.close()  # joins the prefetch thread
    run.preemption.close()
    run.progress.close()
    wall = run.clock.elapsed()  # the training of every leg; the plots below are not counted
    step = run.steps_done
    log.info("final parameters sha256=%s", net.buffer.checksum())
    assert_same_params(comm, net.buffer.data)  # dist: the replicas ended identical
    if stop is None and cfg.train.plots:
        draw_plots(cfg, comm, run_dir, net, run.data.path, *run.test)
    ckpts = run.checkpoints
    summary = run.history.summary(
        model=cfg.model.name,
        dataset=cfg.data.dataset,
        data=run.data.path,
        world_size=comm.world_size,
        world_sizes=run.world_sizes,
        steps=step,
        total_steps=schedule.total_steps,
        epochs=step / schedule.steps_per_epoch,
        complete=step >= schedule.total_steps,
        preempted=bool(stop and stop[1]),
        stopped_by=stop and stop[0],
        exit_code=stop[1] if stop else 0,
        final_checkpoint=ckpts and str(ckpts.latest()),
        best_checkpoint=ckpts and _str(ckpts.best_file()),
        wall_seconds=wall,
        params_sha256=net.buffer.checksum(),
    )
    run.metrics.close(summary, run_dir)
    return summary


def _str(path):
    return None if path is None else str(path)


def make_schedule(cfg, comm, batches):
    steps_per_epoch = batches.steps_per_epoch // cfg.optim.accumulate
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    base_lr = cfg.optim.lr * (comm.world_size if cfg.optim.scale_lr else 1)
    schedule = Schedule(steps_per_epoch, total, base_lr)
    schedule.lrs = [schedule.lr(cfg, step) for step in range(total)]
    return schedule


def limit(cfg, schedule):
    """(which setting ends the run, as 'key=value', the key to raise to continue)."""
    if cfg.train.max_steps and schedule.total_steps == cfg.train.max_steps:
        return f"train.max_steps={cfg.train.max_steps}", "train.max_steps"
    return f"train.epochs={cfg.train.epochs}", "train.epochs"


def start_metrics(cfg, comm):
    """Every rank's metrics server; a busy port on any rank stops every rank, in one line."""
    error, metrics = None, None
    try:
        metrics = Metrics(cfg, comm)
    except OSError as e:
        error = e
    fail_together(comm, "starting the metrics server", error)  # dist
    return metrics


def optimizer_kwargs(cfg):
    kwargs = {"lr": cfg.optim.lr}
    if cfg.optim.name in ("momentum", "nesterov"):
        kwargs["momentum"] = cfg.optim.momentum
    return kwargs


def draw_plots(cfg, comm, run_dir, net, path, x_test, t_test):
    """The plots of the finished run, from predictions each rank makes on its own test
    share (no rank re-predicts the whole test set), gathered to rank 0."""
    from .plots import Predictions, write_plots

    p = net.predict_proba(x_test)
    share = (t_test, p.argmax(axis=1), p.max(axis=1))
    shares = comm.gather_object(share, root=0)  # dist: 10,000 x 3 numbers in all
    if comm.is_root:
        t, y, prob = (np.concatenate(column) for column in zip(*shares, strict=True))
        images = read_test_images(path, cfg.data.eval_split)
        with written(run_dir):
            write_plots(run_dir, Predictions(t, y, prob, images))
