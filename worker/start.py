"""The start of a training run: its data, the moment it commits to disk, what it logs.

Everything before `commit` only reads (and prepares the cache's data file): a start that
fails — a bad config, a missing data file, a busy port, a refused checkpoint — leaves no
run directory behind. `commit` creates it, writes config.toml and the history files.
"""

import logging
from pathlib import Path

from mpinet.cluster import fail_together, on_root
from mpinet.data import TrainBatches, eval_share
from mpinet.data.h5file import open_checked
from mpinet.data.prepare import describe, ensure_prepared
from mpinet.model import input_layout

from .config import model_spec, write_config
from .environment import record
from .files import written
from .history import History

log = logging.getLogger(__name__)


def prepare_data(cfg, comm):
    """(the HDF5 file, how it came): rank 0 checks it (and prepares the cache's file when
    it is missing); every rank learns how that went."""

    def ensure():
        path, how = ensure_prepared(
            cfg.data.path or None, cfg.data.dataset, cfg.data.source or None
        )
        return str(path), how

    return on_root(comm, "preparing the data", ensure)  # dist


def open_data(cfg, comm, path):
    """This rank's training batches and test share (each rank reads its own part)."""
    shape = input_layout(model_spec(cfg))  # (n, 784) for an mlp, (n, 1, 28, 28) for a CNN
    augment = {"shift": cfg.data.shift, "rotate": cfg.data.rotate} if cfg.data.augment else None
    micro_batch = cfg.train.batch_size // cfg.optim.accumulate
    error, result = None, None
    try:
        if micro_batch * cfg.optim.accumulate != cfg.train.batch_size:
            raise ValueError(
                f"train.batch_size: {cfg.train.batch_size} does not divide by "
                f"optim.accumulate={cfg.optim.accumulate}; expected a multiple"
            )
        batches = TrainBatches(
            path,
            global_batch=micro_batch,
            rank=comm.rank,
            world_size=comm.world_size,
            seed=cfg.train.seed,
            order=cfg.data.order,
            dtype=cfg.model.dtype,
            shape=shape,
            normalize=cfg.data.normalize,
            augment=augment,
            prefetch=prefetch(cfg.data),
            limit=cfg.data.train_limit,
        )
        if batches.steps_per_epoch < cfg.optim.accumulate:
            raise ValueError(
                f"optim.accumulate: {cfg.optim.accumulate} micro-batches per "
                f"step; expected at most the {batches.steps_per_epoch} of an epoch"
            )
        x_test, t_test = eval_share(
            path,
            cfg.data.eval_split,
            comm.rank,
            comm.world_size,
            dtype=cfg.model.dtype,
            shape=shape,
            normalize=cfg.data.normalize,
        )
        result = batches, x_test, t_test
    except (ValueError, OSError) as e:
        error = e
    fail_together(comm, "opening the data", error)  # dist
    return result


def commit(cfg, comm, run_dir, make_history, leg):
    """Rank 0 creates the run directory and writes config.toml, the history files and this
    leg's environment (after the checkpoint was accepted: a refused resume writes nothing)
    -> History (every rank)."""

    def write_all():
        with written(run_dir):
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        with written(Path(run_dir) / "config.toml"):
            write_config(cfg, run_dir)
        history = make_history()
        record(run_dir, leg)
        return history

    history = on_root(comm, "creating the run directory", write_all, share=False)  # dist
    return history if comm.is_root else History(None)  # only rank 0 writes


def prefetch(data):
    """data.prefetch: "auto" is a thread for augmented batches only. A plain batch of 100
    takes 0.06-0.2 ms to make, less than handing it over from a thread (docs/data.md), and
    on a host with no spare core the thread takes CPU from the ranks; an augmented one
    takes about 3 ms, which the thread hides behind the step."""
    return data.augment if data.prefetch == "auto" else data.prefetch


def log_start(cfg, comm, net, data, batches, schedule, resumed, metrics):
    """What a person checks at the start: data, model, learning rate, batches, metrics."""
    log_data(comm, data.path, data.how)
    log_schedule(cfg, net, schedule, resumed.step, resumed.total_steps)
    log_batches(cfg, comm, batches, schedule, metrics)


def log_data(comm, path, how):
    text = on_root(comm, "describing the data", lambda: describe(path), share=False)  # dist
    log.info("data %s (%s; %s)", path, text, how)


def log_schedule(cfg, net, schedule, step, before):
    """The model, the learning rate at `step`, and how a changed run length changes it."""
    lr = schedule.lr(cfg, step)
    log.info(
        "model %s (%d parameters, %s), optimizer %s, base lr %g%s, lr %.3g at step %d "
        "(%s schedule)",
        cfg.model.name,
        net.buffer.size,
        cfg.model.dtype,
        cfg.optim.name,
        schedule.base_lr,
        " (scaled by world size)" if cfg.optim.scale_lr else "",
        lr,
        step,
        cfg.optim.schedule,
    )
    if before and before != schedule.total_steps:
        old = schedule.lr(cfg, step, total_steps=before)
        change = (
            f"the {cfg.optim.schedule} schedule is recomputed over the new length: lr "
            f"at step {step} {old:.3g} -> {lr:.3g}"
            if old != lr
            else f"the {cfg.optim.schedule} schedule does not depend on the length"
        )
        log.info("run length %d -> %d steps; %s", before, schedule.total_steps, change)


def log_batches(cfg, comm, batches, schedule, metrics):
    log.info(
        "global batch %d = %d ranks x %d samples x %d micro-batch(es); %d steps/epoch, "
        "%d steps in all; data order %s, %d samples per rank in memory, prefetch %s",
        cfg.train.batch_size,
        comm.world_size,
        batches.local_batch,
        cfg.optim.accumulate,
        schedule.steps_per_epoch,
        schedule.total_steps,
        cfg.data.order,
        batches.samples_per_rank,
        "on" if batches.prefetch else "off",
    )
    urls = comm.gather_object(metrics.url, root=0)  # dist
    if comm.is_root and any(urls):
        log.info("metrics: %s", ", ".join(f"{u} (rank {r})" for r, u in enumerate(urls)))


def read_test_images(path, split="test"):
    """The evaluated split's images as stored (uint8, n x 28 x 28): for the plots, rank 0."""
    with open_checked(path) as f:
        return f[split]["images"][:]
