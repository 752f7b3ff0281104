"""Full-state checkpoints from the training loop: save, resume, and pre-emption.

Rank 0 writes (worker/checkpoints.py, model/checkpoint.py); every rank learns whether that
worked. On resume rank 0 reads and validates, and the state is broadcast, so every replica
restarts from the same bits: parameters, BatchNorm state, optimizer state, the step, and
each rank's dropout stream (data order and learning rate are functions of the step).
"""

import json
import logging
import signal

import numpy as np

from mpinet.cluster import fail_together
from mpinet.model.checkpoint import restore, rng_state, set_rng_state

from .checkpoints import CheckpointDir, find_resume
from .config import to_toml

log = logging.getLogger("mpinet.worker")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGUSR1; run again with --resume


def save_checkpoint(cfg, comm, checkpoints, net, optimizer, step, running, data_meta,
                    test_accuracy=None):
    """Every rank calls this; rank 0 writes. Returns the save's duration (None elsewhere).

    data_meta: the data file's fingerprint, and its pixel statistics when the inputs are
    standardised (so inference needs no data file).
    """
    if net.state.size:
        comm.allreduce_mean_(net.state.data)  # dist: the BatchNorm statistics of all ranks
    dropout = comm.gather_object(rng_state(net.dropout_rng), root=0)  # dist
    sums = comm.gather_object(running.tolist(), root=0)  # dist: train loss since last eval
    error, seconds = None, None
    if comm.is_root:
        meta = {"step": step, "world_size": comm.world_size, "config": to_toml(cfg),
                "dropout_rngs": json.dumps(dropout), "running": json.dumps(sums), **data_meta}
        try:
            checkpoints.save(net, optimizer, meta, test_accuracy=test_accuracy)
            seconds = checkpoints.last_seconds
        except (OSError, ValueError) as e:
            error = e
    fail_together(comm, f"saving the checkpoint of step {step}", error)  # dist
    return seconds


def load_checkpoint(cfg, comm, run_dir, mode, net, optimizer, running, data_id):
    """Restore the newest valid checkpoint (mode "auto") or the file `mode`; -> its step.

    Returns 0 when mode is "auto" and the run has no checkpoint yet (a fresh start).
    """
    error, ckpt = None, None
    if comm.is_root:
        try:
            ckpt = find_resume(mode if mode != "auto" else run_dir, "auto")
            if ckpt is None and mode != "auto":
                raise ValueError(f"--resume {mode}: no valid checkpoint there")
            if ckpt is not None:
                check_compatible(ckpt, cfg, data_id)
        except (OSError, ValueError) as e:
            error = e
    fail_together(comm, "reading the checkpoint to resume from", error)  # dist
    ckpt = comm.bcast_object(ckpt, root=0)  # dist: arrays and meta, validated on rank 0
    if ckpt is None:
        log.info("--resume auto: no checkpoint in %s yet, starting from step 0", run_dir)
        return 0
    restore(ckpt, net, optimizer)
    step = int(ckpt.meta["step"])
    if int(ckpt.meta["world_size"]) == comm.world_size:
        set_rng_state(net.dropout_rng, json.loads(ckpt.meta["dropout_rngs"])[comm.rank])
        running[:] = json.loads(ckpt.meta["running"])[comm.rank]
    else:  # another world size: the replicated state carries over, per-rank streams cannot
        fresh = np.random.default_rng((cfg.train.seed, comm.rank, step))
        net.dropout_rng.bit_generator.state = fresh.bit_generator.state  # in place: layers hold it
    log.info("resumed from %s at step %d (saved by %s rank(s))", ckpt.path, step,
             ckpt.meta["world_size"])
    return step


def check_compatible(ckpt, cfg, data_id):
    """A checkpoint resumes only the same model on the same data."""
    if ckpt.meta.get("data_fingerprint") != data_id:
        raise ValueError(f"checkpoint {ckpt.path} was trained on another data file "
                         f"(fingerprint {ckpt.meta.get('data_fingerprint')}, this one {data_id})")
    if ckpt.dtype != cfg.model.dtype:
        raise ValueError(f"checkpoint {ckpt.path} holds {ckpt.dtype} parameters, but "
                         f"model.dtype is {cfg.model.dtype}")


class Preemption:
    """SIGTERM / SIGUSR1 on any rank -> every rank checkpoints at the next step boundary.

    The handler only sets a flag; `requested(comm)` sums the flags over the ranks (one tiny
    allreduce per step), so all ranks decide together, at the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.flag = np.zeros(1)
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        self.flag[0] = 1

    def requested(self, comm):
        flags = self.flag.copy()
        comm.allreduce_sum_(flags)  # dist
        return bool(flags[0] > 0)

    def close(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def make_checkpoint_dir(cfg, comm, run_dir):
    return CheckpointDir(run_dir, keep_last=cfg.train.keep_last,
                         keep_best=cfg.train.keep_best) if comm.is_root else None
