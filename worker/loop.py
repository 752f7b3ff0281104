"""train(config, comm, run_dir): what every rank runs, top to bottom.

Lines marked `# dist:` exist only because there are several ranks; with a LocalComm they
are no-ops, and the rest is the book's training loop. Nothing is written to the run
directory until the start has been accepted (data, model, metrics port, checkpoint): a
start that fails leaves no run directory behind.
"""

import logging
import math
import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from mpinet.cluster import (
    AllRanksError,
    assert_same_config,
    assert_same_data,
    assert_same_layout,
    assert_same_params,
    fail_together,
)
from mpinet.data import fingerprint
from mpinet.model import build
from mpinet.model.optimizers import create
from mpinet.model.schedules import learning_rate

from .config import config_hash, model_spec
from .environment import describe
from .files import written
from .history import History, Progress
from .metrics import Metrics
from .resume import (
    Clock,
    Preemption,
    Resumed,
    make_checkpoint_dir,
    restore_checkpoint,
    save_checkpoint,
)
from .start import commit, log_start, open_data, prepare_data, read_test_images
from .threads import blas_threads_for, pin_blas_threads

log = logging.getLogger("mpinet.worker")


@dataclass
class Schedule:
    """How many steps the run has and the learning rate of each (a function of the step)."""

    steps_per_epoch: int
    total_steps: int
    base_lr: float

    def lr(self, cfg, step, total_steps=None):
        o = cfg.optim
        return learning_rate(
            step,
            self.base_lr,
            o.schedule,
            total_steps or self.total_steps,
            o.warmup_steps,
            o.step_size,
            o.gamma,
            o.min_lr,
        )


def train(cfg, comm, run_dir, ckpt=None):
    """Train as `cfg` says -> (summary or None, net); rank 0 writes the run directory.

    ckpt: the validated checkpoint to resume from (rank 0; None on the others, or for a
    fresh start). summary is None when the resumed run was already complete (nothing is
    written then); summary["exit_code"] says how the run ended (0, or a signal's code).
    """
    # -- setup: nothing is written yet -----------------------------------------------------
    threads = blas_threads_for(comm.local_size, cfg.train.blas_threads)
    blas = pin_blas_threads(threads)
    log.info(
        "%d rank(s) (%s), %d BLAS thread(s) each: %s", comm.world_size, comm.library, threads, blas
    )
    path, how = prepare_data(cfg, comm)
    data_id = fingerprint(path)
    batches, x_test, t_test = open_data(cfg, comm, path)
    data_meta = {"data_fingerprint": data_id}
    if batches.stats is not None:  # standardised inputs: inference needs the statistics
        data_meta.update(pixel_mean=batches.stats[0], pixel_std=batches.stats[1])
    net = build(
        model_spec(cfg),
        dtype=cfg.model.dtype,
        seed=cfg.train.seed,
        dropout_seed=(cfg.train.seed, comm.rank),
        bn_allreduce=comm.allreduce_sum_ if cfg.model.sync_bn else None,
    )  # dist
    optimizer = create(cfg.optim.name, **optimizer_kwargs(cfg))
    metrics = start_metrics(cfg, comm)
    running = np.zeros(3)  # training loss sum, correct, samples since the last evaluation

    # -- make the replicas identical (dist) ------------------------------------------------
    comm.broadcast_(net.buffer.data, root=0)  # dist: DDP and Horovod do the same at start
    if net.state.size:
        comm.broadcast_(net.state.data, root=0)  # dist
    assert_same_layout(comm, net.buffer.layout())  # dist
    assert_same_config(comm, config_hash(cfg))  # dist
    assert_same_data(comm, data_id)  # dist
    resuming = comm.bcast_object(ckpt is not None, root=0)  # dist
    resumed = (
        restore_checkpoint(cfg, comm, ckpt, net, optimizer, running, data_id)
        if resuming
        else Resumed()
    )
    assert_same_params(comm, net.buffer.data)  # dist

    schedule = make_schedule(cfg, comm, batches)
    step = resumed.step
    if resuming and step >= schedule.total_steps:
        log.info(
            "run already complete at step %d (%s); raise %s to continue",
            step,
            *limit(cfg, schedule),
        )
        metrics.close(None)
        return None, net

    # -- the start is accepted: from here on, the run directory is written ----------------
    checkpoints = make_checkpoint_dir(cfg, comm, run_dir)
    leg = describe(comm, step)  # dist: every rank's host
    history = commit(cfg, comm, run_dir, lambda: History(run_dir, step, resumed.source), leg)
    log_start(cfg, comm, net, path, how, batches, schedule, resumed, metrics)
    world_sizes = resumed.world_sizes + [comm.world_size]
    clock = Clock(resumed.elapsed_seconds, resumed.train_seconds)

    # -- train ------------------------------------------------------------------------------
    k = cfg.optim.accumulate
    progress = Progress(schedule.total_steps, cfg.train.log_every, comm.is_root, done=step)
    preemption = Preemption()
    acc = np.zeros_like(net.buffer.grad) if k > 1 else None  # gradient accumulation
    stop, row = None, None
    while step < schedule.total_steps and stop is None:
        epoch, position = divmod(step, schedule.steps_per_epoch)
        micro = batches.epoch(epoch, start_step=position * k)
        for _ in range(min(schedule.steps_per_epoch - position, schedule.total_steps - step)):
            comm.step = step  # dist: named by the stall watchdog's message
            if step == cfg.train.fail_step and comm.rank == cfg.train.fail_rank:
                inject_fault(cfg.train.fail_kind, step, comm.rank, net)
            t0 = time.perf_counter()
            loss, times = forward_backward(net, micro, k, acc, running)
            ta = time.perf_counter()
            comm.allreduce_mean_(net.buffer.grad)  # dist: ONE message for every gradient
            to = time.perf_counter()
            check_and_clip(net.buffer.grad, cfg.optim.clip_norm, step)
            optimizer.lr = schedule.lr(cfg, step)
            optimizer.update(net.buffer.data, net.buffer.grad)
            step += 1
            t1 = time.perf_counter()
            times.update(allreduce=to - ta, optimizer=t1 - to)
            clock.train_seconds += t1 - t0
            epochs = step / schedule.steps_per_epoch
            metrics.observe_step(step, epochs, loss, cfg.train.batch_size, times, optimizer.lr)
            logged = progress.update(step, epochs, loss, optimizer.lr, t1 - t0, to - ta)
            if logged:
                history.append_step(logged)
            if cfg.train.check_every and step % cfg.train.check_every == 0:
                assert_same_params(comm, net.buffer.data)  # dist: replica divergence
            row = None
            if due(step, cfg.train.eval_every, schedule.steps_per_epoch, schedule.total_steps):
                row = evaluate(net, comm, x_test, t_test, running)
                row.update(
                    epoch=round(epochs, 4),
                    step=step,
                    lr=optimizer.lr,
                    samples_per_second=row.pop("train_samples") / clock.train_seconds,
                    elapsed_seconds=clock.elapsed(),
                )
                running[:], clock.train_seconds = 0, 0.0
                history.append(row)
                metrics.observe_eval(row)
            stop = preemption.requested(comm)  # dist: a signal on any rank stops all
            if stop is None and step == cfg.train.stop_after:  # the schedule stays the same
                stop = (f"train.stop_after={step}", 0)
            if stop or due(
                step, cfg.train.checkpoint_every, schedule.steps_per_epoch, schedule.total_steps
            ):
                seconds = save_checkpoint(
                    cfg,
                    comm,
                    checkpoints,
                    net,
                    optimizer,
                    step,
                    schedule.total_steps,
                    running,
                    clock,
                    world_sizes,
                    data_meta,
                    row and row["test_accuracy"],
                )
                if seconds is not None:  # rank 0 wrote it
                    metrics.observe_checkpoint(seconds)
            if stop:
                log.warning(
                    "stopped by %s after step %d; checkpoint saved; run again with --resume auto",
                    stop[0],
                    step,
                )
                break
        micro.close()
    preemption.close()
    progress.close()
    wall = clock.elapsed()  # the training of every leg; the plots below are not counted
    log.info("final parameters sha256=%s", net.buffer.checksum())
    assert_same_params(comm, net.buffer.data)  # dist: the replicas ended identical
    if stop is None and cfg.train.plots:
        draw_plots(cfg, comm, run_dir, net, path, x_test, t_test)
    summary = history.summary(
        model=cfg.model.name,
        dataset=cfg.data.dataset,
        data=str(path),
        world_size=comm.world_size,
        world_sizes=world_sizes,
        steps=step,
        total_steps=schedule.total_steps,
        epochs=step / schedule.steps_per_epoch,
        complete=step >= schedule.total_steps,
        preempted=bool(stop and stop[1]),
        stopped_by=stop and stop[0],
        exit_code=stop[1] if stop else 0,
        final_checkpoint=checkpoints and str(checkpoints.latest()),
        best_checkpoint=checkpoints and _str(checkpoints.best_file()),
        wall_seconds=wall,
        params_sha256=net.buffer.checksum(),
    )
    metrics.close(summary, run_dir)
    return summary, net


def _str(path):
    return None if path is None else str(path)


def make_schedule(cfg, comm, batches):
    steps_per_epoch = batches.steps_per_epoch // cfg.optim.accumulate
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    base_lr = cfg.optim.lr * (comm.world_size if cfg.optim.scale_lr else 1)
    return Schedule(steps_per_epoch, total, base_lr)


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


def due(step, every, steps_per_epoch, total_steps):
    """Whether an evaluation or checkpoint falls after `step`: at each epoch's end, after the
    last step, and every `every` steps (0: only the first two)."""
    return step % steps_per_epoch == 0 or step == total_steps or bool(every and step % every == 0)


def forward_backward(net, micro, k, acc, running):
    """k micro-batches of forward and backward; their mean gradient ends in buffer.grad."""
    times = {"data": 0.0, "forward": 0.0, "backward": 0.0}
    for i in range(k):
        t0 = time.perf_counter()
        x, t = next(micro)
        t1 = time.perf_counter()
        loss = net.loss(x, t)
        t2 = time.perf_counter()
        net.backward()
        t3 = time.perf_counter()
        times["data"] += t1 - t0
        times["forward"] += t2 - t1
        times["backward"] += t3 - t2
        running += (loss * len(t), count_correct(net, t), len(t))
        if acc is not None:  # backward overwrites grad: sum the micro-batches aside
            if i == 0:
                acc[...] = net.buffer.grad
            else:
                acc += net.buffer.grad
    if acc is not None:
        np.multiply(acc, 1.0 / k, out=net.buffer.grad)
    return loss, times


def inject_fault(kind, step, rank, net):
    """Fault injection for tests: fail this rank at this step, as configured ("diverge":
    nudge this replica's first parameter, for train.check_every to find)."""
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "diverge":
        net.buffer.data[0] += 1
        return
    raise RuntimeError(f"fault injection: train.fail_step={step} on rank {rank}")


def count_correct(net, t):
    """Correct predictions of the last training forward (its softmax output is cached)."""
    y = getattr(net.loss_layer, "y", None)
    if y is None or y.ndim != 2 or y.shape[1] == 1:
        return 0
    return int(np.sum(y.argmax(axis=1) == t))


def check_and_clip(grad, clip_norm, step):
    """Stop on a non-finite gradient; clip the global norm when configured.

    After the allreduce every rank holds the same gradient, so every rank stops together.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged gradient: said below
        norm = math.sqrt(float(np.dot(grad, grad)))
    if not math.isfinite(norm):
        raise AllRanksError(
            f"step {step}: the gradient is not finite (NaN or Inf); lower "
            f"optim.lr or set optim.clip_norm"
        )
    if clip_norm and norm > clip_norm:
        grad *= clip_norm / norm
    return norm


def evaluate(net, comm, x_test, t_test, running):
    """Test loss and accuracy over EVERY test sample once, and the training averages.

    Each rank evaluates its share; sums and counts are added across ranks, then divided:
    never an average of per-rank means, never padding.
    """
    if net.state.size:
        comm.allreduce_mean_(net.state.data)  # dist: BatchNorm running statistics
    loss_sum, correct, n = net.evaluate(x_test, t_test)
    sums = np.array([loss_sum, correct, n, *running], dtype=np.float64)
    comm.allreduce_sum_(sums)  # dist
    test_loss, test_correct, test_n, train_loss, train_correct, train_n = sums
    return {
        "train_loss": train_loss / train_n,
        "train_accuracy": train_correct / train_n,
        "test_loss": test_loss / test_n,
        "test_accuracy": test_correct / test_n,
        "test_samples": int(test_n),
        "train_samples": train_n,
    }


def draw_plots(cfg, comm, run_dir, net, path, x_test, t_test):
    """The plots of the finished run, from predictions each rank makes on its own test
    share (no rank re-predicts the whole test set), gathered to rank 0."""
    from .plots import Predictions, write_plots

    p = net.predict_proba(x_test)
    share = (t_test, p.argmax(axis=1), p.max(axis=1))
    shares = comm.gather_object(share, root=0)  # dist: 10,000 x 3 numbers in all
    if comm.is_root:
        t, y, prob = (np.concatenate(column) for column in zip(*shares, strict=True))
        with written(run_dir):
            write_plots(
                run_dir, Predictions(t, y, prob, read_test_images(path, cfg.data.eval_split))
            )


def optimizer_kwargs(cfg):
    kwargs = {"lr": cfg.optim.lr}
    if cfg.optim.name in ("momentum", "nesterov"):
        kwargs["momentum"] = cfg.optim.momentum
    return kwargs
