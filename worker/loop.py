"""train(config, comm, run_dir): what every rank runs, top to bottom.

Lines marked `# dist:` exist only because there are several ranks; with a LocalComm they
are no-ops, and the rest is the book's training loop.
"""

import logging
import math
import os
import signal
import time

import numpy as np

from mpinet.cluster import (
    AllRanksError,
    assert_same_config,
    assert_same_data,
    assert_same_layout,
    assert_same_params,
    fail_together,
)
from mpinet.data import TrainBatches, ensure_prepared, eval_share, fingerprint
from mpinet.model import build
from mpinet.model.optimizers import create
from mpinet.model.schedules import learning_rate

from .config import config_hash, model_spec
from .history import History, Progress
from .metrics import Metrics
from .plots import write_plots
from .resume import (
    EXIT_PREEMPTED,
    Preemption,
    load_checkpoint,
    make_checkpoint_dir,
    save_checkpoint,
)
from .threads import blas_threads_for, pin_blas_threads

log = logging.getLogger("mpinet.worker")


def train(cfg, comm, run_dir, resume=None):
    """Train as `cfg` says -> (summary, net); rank 0 writes history.jsonl, summary.json.

    resume: None (a fresh run), "auto" (the newest valid checkpoint of run_dir, if any) or
    a checkpoint path. summary["preempted"] is True when a signal stopped the run.
    """
    # -- setup ---------------------------------------------------------------------------
    threads = blas_threads_for(comm.local_size, cfg.train.blas_threads)
    blas = pin_blas_threads(threads)
    log.info("%d rank(s) (%s), %d BLAS thread(s) each: %s", comm.world_size, comm.library,
             threads, blas)
    path = prepare_data(cfg, comm)
    data_id = fingerprint(path)
    batches, x_test, t_test = open_data(cfg, comm, path)
    data_meta = {"data_fingerprint": data_id}
    if batches.stats is not None:  # standardised inputs: inference needs the statistics
        data_meta.update(pixel_mean=batches.stats[0], pixel_std=batches.stats[1])
    net = build(model_spec(cfg), dtype=cfg.model.dtype, seed=cfg.train.seed,
                dropout_seed=(cfg.train.seed, comm.rank),
                bn_allreduce=comm.allreduce_sum_ if cfg.model.sync_bn else None)  # dist
    optimizer = create(cfg.optim.name, **optimizer_kwargs(cfg))
    metrics = Metrics(cfg, comm)
    checkpoints = make_checkpoint_dir(cfg, comm, run_dir)
    running = np.zeros(3)  # training loss sum, correct, samples since the last evaluation

    # -- make the replicas identical (dist) ------------------------------------------------
    comm.broadcast_(net.buffer.data, root=0)  # dist: DDP and Horovod do the same at start
    if net.state.size:
        comm.broadcast_(net.state.data, root=0)  # dist
    assert_same_layout(comm, net.buffer.layout())  # dist
    assert_same_config(comm, config_hash(cfg))  # dist
    assert_same_data(comm, data_id)  # dist
    step = load_checkpoint(cfg, comm, run_dir, resume, net, optimizer, running,
                           data_id) if resume else 0
    assert_same_params(comm, net.buffer.data)  # dist

    # -- derived quantities, logged once ------------------------------------------------
    k = cfg.optim.accumulate
    steps_per_epoch = batches.steps_per_epoch // k
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    base_lr = cfg.optim.lr * (comm.world_size if cfg.optim.scale_lr else 1)
    log.info("model %s (%d parameters, %s), optimizer %s, lr %g%s", cfg.model.name,
             net.buffer.size, cfg.model.dtype, cfg.optim.name, base_lr,
             " (scaled by world size)" if cfg.optim.scale_lr else "")
    log.info("global batch %d = %d ranks x %d samples x %d micro-batch(es); %d steps/epoch, "
             "%d steps in all; data order %s, %d samples per rank in memory",
             cfg.train.batch_size, comm.world_size, batches.local_batch, k, steps_per_epoch,
             total_steps, cfg.data.order, batches.samples_per_rank)

    # -- train ------------------------------------------------------------------------------
    history = History(run_dir if comm.is_root else None, after_step=step)
    progress = Progress(total_steps, cfg.train.log_every, comm.is_root, done=step)
    preemption = Preemption()
    acc = np.zeros_like(net.buffer.grad) if k > 1 else None  # gradient accumulation
    start, train_seconds, preempted = time.perf_counter(), 0.0, False
    while step < total_steps and not preempted:
        epoch, position = divmod(step, steps_per_epoch)
        micro = batches.epoch(epoch, start_step=position * k)
        for _ in range(min(steps_per_epoch - position, total_steps - step)):
            comm.step = step  # dist: named by the stall watchdog's message
            if step == cfg.train.fail_step and comm.rank == cfg.train.fail_rank:
                inject_fault(cfg.train.fail_kind, step, comm.rank)
            t0 = time.perf_counter()
            loss, times = forward_backward(net, micro, k, acc, running)
            ta = time.perf_counter()
            comm.allreduce_mean_(net.buffer.grad)  # dist: ONE message for every gradient
            to = time.perf_counter()
            check_and_clip(net.buffer.grad, cfg.optim.clip_norm, step)
            optimizer.lr = learning_rate(step, base_lr, cfg.optim.schedule, total_steps,
                                         cfg.optim.warmup_steps, cfg.optim.step_size,
                                         cfg.optim.gamma, cfg.optim.min_lr)
            optimizer.update(net.buffer.data, net.buffer.grad)
            step += 1
            t1 = time.perf_counter()
            times.update(allreduce=to - ta, optimizer=t1 - to)
            train_seconds += t1 - t0
            metrics.observe_step(step, epoch, loss, cfg.train.batch_size, times, optimizer.lr)
            progress.update(step, epoch, loss, t1 - t0, to - ta)
            if cfg.train.check_every and step % cfg.train.check_every == 0:
                assert_same_params(comm, net.buffer.data)  # dist: replica divergence
            row = None
            if due(step, cfg.train.eval_every, steps_per_epoch, total_steps):
                row = evaluate(net, comm, x_test, t_test, running)
                row.update(epoch=round(step / steps_per_epoch, 4), step=step, lr=optimizer.lr,
                           samples_per_second=row.pop("train_samples") / train_seconds,
                           elapsed_seconds=time.perf_counter() - start)
                running[:], train_seconds = 0, 0.0
                history.append(row)
                metrics.observe_eval(row)
            preempted = preemption.requested(comm)  # dist: a signal on any rank stops all
            if preempted or due(step, cfg.train.checkpoint_every, steps_per_epoch, total_steps):
                seconds = save_checkpoint(cfg, comm, checkpoints, net, optimizer, step, running,
                                          data_meta, row and row["test_accuracy"])
                if seconds is not None:  # rank 0 wrote it
                    metrics.observe_checkpoint(seconds)
            if preempted:
                log.warning("stopped by a signal after step %d; checkpoint saved, exit %d: "
                            "run again with --resume auto", step, EXIT_PREEMPTED)
                break
        micro.close()
    preemption.close()
    progress.close()
    log.info("final parameters sha256=%s", net.buffer.checksum())
    assert_same_params(comm, net.buffer.data)  # dist: the replicas ended identical
    summary = history.summary(world_size=comm.world_size, steps=step,
                              epochs=step / steps_per_epoch, preempted=preempted,
                              wall_seconds=time.perf_counter() - start,
                              params_sha256=net.buffer.checksum())
    if comm.is_root and not preempted:
        write_plots(run_dir, net)
    metrics.close(summary, run_dir)
    return summary, net


def due(step, every, steps_per_epoch, total_steps):
    """Whether an evaluation or checkpoint falls after `step`: at each epoch's end, after the
    last step, and every `every` steps (0: only the first two)."""
    return (step % steps_per_epoch == 0 or step == total_steps
            or bool(every and step % every == 0))


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


def inject_fault(kind, step, rank):
    """Fault injection for tests: fail this rank at this step, as configured."""
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
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
    norm = math.sqrt(float(np.dot(grad, grad)))
    if not math.isfinite(norm):
        raise AllRanksError(f"step {step}: the gradient is not finite (NaN or Inf); lower "
                            f"optim.lr or set optim.clip_norm")
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
    return {"train_loss": train_loss / train_n, "train_accuracy": train_correct / train_n,
            "test_loss": test_loss / test_n, "test_accuracy": test_correct / test_n,
            "test_samples": int(test_n), "train_samples": train_n}


def prepare_data(cfg, comm):
    """The HDF5 file: rank 0 prepares it when missing; every rank learns how that went."""
    error, path = None, None
    if comm.is_root:
        try:
            path = str(ensure_prepared(cfg.data.path or None, cfg.data.dataset,
                                       cfg.data.source or None))
        except (ValueError, OSError) as e:
            error = e
    fail_together(comm, "preparing the data", error)  # dist
    return comm.bcast_object(path, root=0)  # dist


def open_data(cfg, comm, path):
    """This rank's training batches and test share (each rank reads its own part)."""
    shape = "flat" if cfg.model.name == "mlp" else "image"
    augment = {"shift": cfg.data.shift, "rotate": cfg.data.rotate} if cfg.data.augment else None
    micro_batch = cfg.train.batch_size // cfg.optim.accumulate
    error, result = None, None
    try:
        if micro_batch * cfg.optim.accumulate != cfg.train.batch_size:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by "
                             f"optim.accumulate={cfg.optim.accumulate}")
        batches = TrainBatches(path, global_batch=micro_batch, rank=comm.rank,
                               world_size=comm.world_size, seed=cfg.train.seed,
                               order=cfg.data.order, dtype=cfg.model.dtype, shape=shape,
                               normalize=cfg.data.normalize, augment=augment,
                               prefetch=cfg.data.prefetch)
        if batches.steps_per_epoch < cfg.optim.accumulate:
            raise ValueError(f"an epoch has {batches.steps_per_epoch} micro-batches, fewer "
                             f"than optim.accumulate={cfg.optim.accumulate}")
        x_test, t_test = eval_share(path, "test", comm.rank, comm.world_size,
                                    dtype=cfg.model.dtype, shape=shape,
                                    normalize=cfg.data.normalize)
        result = batches, x_test, t_test
    except (ValueError, OSError) as e:
        error = e
    fail_together(comm, "opening the data", error)  # dist
    return result


def optimizer_kwargs(cfg):
    kwargs = {"lr": cfg.optim.lr}
    if cfg.optim.name in ("momentum", "nesterov"):
        kwargs["momentum"] = cfg.optim.momentum
    return kwargs
