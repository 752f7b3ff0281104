"""train(config, comm, run_dir): what every rank runs, top to bottom.

The step reads in DESIGN's order: this rank's share of the batch, loss, backward, ONE
allreduce of the flat gradient, clip, learning rate, update, then one call for everything
after a step (metrics, progress, evaluation, pre-emption, checkpoint). Lines marked
`# dist:` exist only because there are several ranks; with a LocalComm they are no-ops and
the rest is the book's training loop. setup() (worker/start.py) writes nothing: a start that
fails leaves no run directory behind; begin() commits it. `--profile START:COUNT` traces
COUNT steps (worker/profile.py); every other step runs exactly as without it.
"""

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from mpinet.cluster import AllRanksError, assert_same_params
from mpinet.cluster.overlap import Overlap
from mpinet.cluster.wire import Wire

from .evaluate import tally
from .profile import Profile
from .resume import save_checkpoint
from .run import begin, complete, finish, setup

log = logging.getLogger(__name__)
PHASES = ("data", "forward", "backward", "allreduce", "optimizer")


def train(cfg, comm, run_dir, ckpt=None):
    """Train as `cfg` says -> (summary or None, net); rank 0 writes the run directory.

    ckpt: the validated checkpoint to resume from (rank 0; None on the others, or for a
    fresh start). summary is None when the resumed run was already complete (nothing is
    written then); summary["exit_code"] says how the run ended (0, or a signal's code).
    """
    run = setup(cfg, comm, ckpt, TrainSums())  # checks and restores; writes nothing
    if complete(run):  # resumed after the last step: nothing to do, nothing written
        return None, run.net
    profile = Profile(cfg, comm, run, run_dir, PHASES)  # --profile START:COUNT; writes nothing
    begin(run, run_dir)  # the start is accepted: from here on, the run directory is written
    net, optimizer, grad_sum, stop = run.net, run.optimizer, GradSum(run), None
    wire = make_wire(cfg, comm, net)  # dist: float32 as it is, 16-bit values, or overlapped
    for step in range(run.step, run.schedule.total_steps):
        comm.step = step  # dist: named by the stall watchdog's message
        laps = Laps() if step not in profile.steps else profile.laps(step)  # --profile: spans
        for x, t in next(run.micro_batches):  # optim.accumulate micro-batches, this rank's share
            laps.lap("data")
            loss = net.loss(x, t, spans=laps.trace)  # spans: per layer, when profiled
            laps.lap("forward")
            net.backward(spans=wire.backward_hook(laps.trace))  # train.overlap: buckets start
            laps.lap("backward")
            run.sums.add(loss, net, t)
            grad_sum.add(net.buffer.grad)  # backward overwrites grad; no-op if accumulate=1
        grad_sum.mean_into(net.buffer.grad)
        wire.allreduce_mean_(net.buffer.grad)  # dist: ONE mean for every gradient
        laps.lap("allreduce")
        clip_grad_norm(net.buffer.grad, cfg.optim.clip_norm, step)
        laps.lap("optimizer", row="clip")  # the metrics count it in "optimizer"; a trace apart
        optimizer.lr = run.schedule.lrs[step]  # a table of the schedule, made at setup
        optimizer.update(net.buffer.data, net.buffer.grad)
        laps.lap("optimizer")
        stop = after_step(run, step + 1, loss, laps)
        if stop:
            break
    return finish(run, run_dir, stop), net


def make_wire(cfg, comm, net):
    """The gradient's mean: train.allreduce_dtype, and train.overlap's buckets (several
    ranks only: one rank has nothing to overlap)."""
    overlap = None
    if cfg.train.overlap and comm.world_size > 1:
        overlap = Overlap(comm, net.buffer.grad, net.layer_starts())
    return Wire(comm, cfg.train.allreduce_dtype, overlap)


class Laps:
    """Seconds per phase of one step: lap(phase) ends `phase`, begun at the last lap.

    `trace` is None: a step that --profile traces gets a profile.TracedLaps instead, which
    counts the same seconds, also records the spans (`row`: a lap's row in the trace) and is
    what the network's `spans=` receives."""

    trace = None

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.last = time.perf_counter()

    def lap(self, phase, row=None):
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


class GradSum:
    """The mean gradient of optim.accumulate micro-batches (nothing to do for one)."""

    def __init__(self, run):
        self.accumulate = run.cfg.optim.accumulate
        self.sum = np.zeros_like(run.net.buffer.grad) if self.accumulate > 1 else None
        self.count = 0

    def add(self, grad):
        if self.sum is None:
            return
        if self.count == 0:
            self.sum[...] = grad
        else:
            self.sum += grad
        self.count += 1

    def mean_into(self, grad):
        if self.sum is not None:
            np.multiply(self.sum, 1.0 / self.accumulate, out=grad)
            self.count = 0


@dataclass
class TrainSums:
    """This rank's training loss and correct answers since the last evaluation (kept in
    checkpoints, per rank), and the loss since the last progress row."""

    loss: float = 0.0  # sum over samples
    correct: float = 0.0
    samples: float = 0.0
    progress_loss: float = 0.0  # sum over steps of the step's loss
    progress_steps: int = 0

    def add(self, loss, net, t):
        self.loss += loss * len(t)
        self.correct += count_correct(net, t)
        self.samples += len(t)

    def values(self):
        """(loss, correct, samples): what a checkpoint stores and evaluation adds up."""
        return [self.loss, self.correct, self.samples]


def after_step(run, step, loss, laps):
    """Everything after step `step`: metrics, progress, the replica check, evaluation,
    pre-emption and checkpoint -> None, or (what stopped the run, its exit code)."""
    cfg, comm, schedule = run.cfg, run.comm, run.schedule
    run.steps_done = step
    seconds = sum(laps.seconds.values())
    run.clock.train_seconds += seconds
    epochs = step / schedule.steps_per_epoch
    lr = run.optimizer.lr
    if run.metrics.enabled:  # metrics.port >= 0
        run.metrics.observe_step(step, epochs, loss, cfg.train.batch_size, laps.seconds, lr)
    run.sums.progress_loss, run.sums.progress_steps = (
        run.sums.progress_loss + loss,
        run.sums.progress_steps + 1,
    )
    if step % run.progress.every == 0:  # a bar on a terminal: every step
        run.progress.update(step, epochs, loss, run.sums, lr, seconds, laps.seconds["allreduce"])
    if cfg.train.check_every and step % cfg.train.check_every == 0:
        assert_same_params(comm, run.net.buffer.data)  # dist: replica divergence
    stop = stop_requested(run, step)
    # samples/s counts the step's bookkeeping too, but not evaluations and checkpoints
    run.clock.train_seconds += time.perf_counter() - laps.last
    row = evaluate(run, step, epochs) if due(step, cfg.train.eval_every, schedule) else None
    if stop or due(step, cfg.train.checkpoint_every, schedule):
        accuracy = row and row["test_accuracy"]
        seconds = save_checkpoint(run, accuracy)
        if seconds is not None:  # rank 0 wrote it
            run.metrics.observe_checkpoint(seconds)
    if stop:
        log.warning(
            "stopped by %s after step %d; checkpoint saved; run again with --resume auto",
            stop[0],
            step,
        )
    if laps.trace is not None:  # --profile: the bookkeeping's span; the trace after the window
        laps.trace.end(stop)
    return stop


def due(step, every, schedule):
    """Whether an evaluation or checkpoint falls after `step`: at each epoch's end, after the
    last step, and every `every` steps (0: only the first two)."""
    return (
        step % schedule.steps_per_epoch == 0
        or step == schedule.total_steps
        or bool(every and step % every == 0)
    )


def stop_requested(run, step):
    """A signal on any rank, or train.stop_after: the same answer on every rank."""
    flags = run.preemption.flags.copy()
    run.comm.allreduce_sum_(flags)  # dist: a signal on any rank stops all
    if flags.any():
        return run.preemption.reason(flags)
    if step == run.cfg.train.stop_after:  # the schedule stays the same
        return (f"train.stop_after={step}", 0)
    return None


def evaluate(run, step, epochs):
    """Test loss and accuracy over EVERY sample of the split once, and the training means.

    Each rank evaluates its share with the code of `mpinet eval` (tally); sums and counts are
    added across ranks, then divided: never an average of per-rank means, never padding.
    """
    net, comm = run.net, run.comm
    if net.state.size:
        run.frozen.average_state_(comm, net)  # dist: BatchNorm running statistics
    counts, loss_sum = tally(net, *run.test)
    sums = np.array([loss_sum, counts.trace(), counts.sum(), *run.sums.values()], np.float64)
    comm.allreduce_sum_(sums)  # dist
    test_loss, test_correct, test_n, train_loss, train_correct, train_n = sums
    row = {
        "train_loss": train_loss / train_n,
        "train_accuracy": train_correct / train_n,
        "test_loss": test_loss / test_n,
        "test_accuracy": test_correct / test_n,
        "test_samples": int(test_n),
        "epoch": round(epochs, 4),
        "step": step,
        "lr": run.optimizer.lr,
        "samples_per_second": train_n / run.clock.train_seconds,
        "elapsed_seconds": run.clock.elapsed(),
    }
    run.sums.loss = run.sums.correct = run.sums.samples = 0.0
    run.clock.train_seconds = 0.0
    run.history.append(row)
    run.metrics.observe_eval(row)
    return row


def count_correct(net, t):
    """Correct predictions of the last training forward (its softmax output is cached)."""
    y = getattr(net.loss_layer, "y", None)
    if y is None or y.ndim != 2 or y.shape[1] == 1:
        return 0
    return int(np.sum(y.argmax(axis=1) == t))


def clip_grad_norm(grad, clip_norm, step):
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
