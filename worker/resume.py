"""Full-state checkpoints from the training loop: what to resume from, restore, save.

A resumed run is "the same command": `--resume auto|PATH` finds the checkpoint first (rank
0 reads and validates it), the run's own config (stored in the checkpoint) is the base that
--config/--set may change only where that is safe (worker/config.py, RESUMABLE), and nothing
is written before all of that is accepted. On restore the state is broadcast, so every
replica restarts from the same bits: parameters, BatchNorm state, optimizer state, the step,
each rank's dropout stream (data order and learning rate are functions of the step), and
the clocks and counts that summary.json adds up across legs.
"""

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpinet.cluster import on_root
from mpinet.model.checkpoint import restore, set_rng_state

from .checkpoint_dir import CheckpointDir, find_resume
from .config import load_config, to_toml
from .files import written
from .transfer import check_flags

log = logging.getLogger(__name__)


def resolve_start(args, overrides):
    """Rank 0's part of starting: (config, run directory, checkpoint to resume or None).

    --resume auto: the newest valid checkpoint of --run-dir (none yet: a fresh start from
    the run's config.toml, if it has one); --resume PATH: that checkpoint file, pointer or
    directory. Raises ValueError/OSError (one line) for anything the user must fix.
    """
    check_flags(args)  # --init-from with --resume: refused
    run_dir = Path(args.run_dir) if args.run_dir else None
    ckpt, base = None, None
    if args.resume == "auto":
        if run_dir is None:
            raise ValueError(
                "--resume auto: no --run-dir; expected the run directory to "
                "continue; pass --run-dir DIR (the same as the first time)"
            )
        ckpt = find_resume(run_dir) if run_dir.is_dir() else None
        if ckpt is None and (run_dir / "config.toml").is_file():
            base = ((run_dir / "config.toml").read_text(), f"{run_dir}/config.toml")
    elif args.resume:
        where = Path(args.resume)
        if not where.exists():
            raise FileNotFoundError(
                f"--resume {where}: no such file or directory; expected "
                f"a checkpoint file, a run directory or its "
                f"checkpoints/latest; check the path"
            )
        ckpt = find_resume(where)
        if ckpt is None:
            raise ValueError(
                f"--resume {where}: holds no checkpoint; expected ckpt-*.h5 "
                f"files; pass a run directory that has checkpoints/"
            )
    if ckpt is not None:
        base = (ckpt.meta["config"], f"checkpoint {ckpt.path}")
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    elif (run_dir / "history.jsonl").exists() and not args.resume:
        raise ValueError(
            f"--run-dir {run_dir}: already holds a run (history.jsonl); expected "
            f"a new directory; continue it with --resume auto, or choose another"
        )
    return load_config(args.config, overrides, base=base), run_dir, ckpt


@dataclass
class Resumed:
    """What a checkpoint tells the loop beyond the arrays (all zero for a fresh start)."""

    step: int = 0
    total_steps: int = 0  # of the leg that saved it (0: unknown)
    elapsed_seconds: float = 0.0  # wall time of the earlier legs
    train_seconds: float = 0.0  # training time since the last evaluation
    world_sizes: list = field(default_factory=list)  # of the earlier legs
    source: Path | None = None  # the run directory the checkpoint came from


def restore_checkpoint(cfg, comm, ckpt, net, optimizer, data_meta):
    """Every rank: restore rank 0's validated checkpoint `ckpt` (None elsewhere) ->
    (Resumed, this rank's training sums since the last evaluation, or None when the world
    size changed)."""
    sums = None

    def checked():
        check_compatible(ckpt, cfg, data_meta["data_fingerprint"])
        return ckpt

    # dist: the arrays and meta, validated on rank 0, go to every rank
    ckpt = on_root(comm, "checking the checkpoint to resume from", checked, errors=ValueError)
    restore(ckpt, net, optimizer)
    meta = ckpt.meta
    step = int(meta["step"])
    resumed = Resumed(
        step,
        int(meta.get("total_steps", 0)),
        float(meta.get("elapsed_seconds", 0.0)),
        world_sizes=json.loads(meta.get("world_sizes", "[]")) or [int(meta["world_size"])],
        source=Path(ckpt.path).parent.parent,
    )
    if int(meta["world_size"]) == comm.world_size:
        set_rng_state(net.dropout_rng, json.loads(meta["dropout_rngs"])[comm.rank])
        sums = json.loads(meta["running"])[comm.rank]
        resumed.train_seconds = float(meta.get("train_seconds", 0.0))
    else:  # another world size: the replicated state carries over, per-rank streams cannot
        fresh = np.random.default_rng((cfg.train.seed, comm.rank, step))
        net.dropout_rng.bit_generator.state = fresh.bit_generator.state  # in place: layers hold it
    log.info(
        "resumed from %s at step %d (saved by %s rank(s))", ckpt.path, step, meta["world_size"]
    )
    return resumed, sums


def check_compatible(ckpt, cfg, data_id):
    """A checkpoint resumes only the same model on the same data, with its optimizer."""
    if ckpt.optimizer is None:
        raise ValueError(
            f"checkpoint {ckpt.path}: holds no optimizer state (an inference-only "
            f"export?); expected a checkpoint `mpinet train` wrote; resume from "
            f"one of the run's checkpoints"
        )
    found = ckpt.meta.get("data_fingerprint")
    if found != data_id:
        raise ValueError(
            f"checkpoint {ckpt.path}: trained on data with fingerprint "
            f"{str(found)[:16]}; expected {data_id[:16]} (data.path "
            f"{cfg.data.path or 'the cache'}); pass the run's data file to --data"
        )
    if ckpt.dtype != cfg.model.dtype:
        raise ValueError(
            f"checkpoint {ckpt.path}: holds {ckpt.dtype} parameters; expected "
            f"{cfg.model.dtype} (model.dtype); use the run's model.dtype"
        )


@dataclass
class Clock:
    """The wall and training time a run has spent, across legs (checkpointed)."""

    elapsed_before: float = 0.0
    train_seconds: float = 0.0  # since the last evaluation
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.started


def save_checkpoint(run, test_accuracy=None):
    """Every rank calls this; rank 0 writes. Returns the save's duration (None elsewhere).

    The checkpoint records the data file's fingerprint, and its pixel statistics when the
    inputs are standardised (so inference needs no data file).
    """
    cfg, comm, net, step, clock = run.cfg, run.comm, run.net, run.steps_done, run.clock
    if net.state.size:
        run.frozen.average_state_(comm, net)  # dist: the BatchNorm statistics of all ranks
    dropout = comm.gather_object(net.dropout_rng.bit_generator.state, root=0)  # dist
    sums = comm.gather_object(run.sums.values(), root=0)  # dist: train sums since last eval

    def write():
        meta = {
            "step": step,
            "world_size": comm.world_size,
            "config": to_toml(cfg),
            "dropout_rngs": json.dumps(dropout),
            "running": json.dumps(sums),
            "world_sizes": json.dumps(run.world_sizes),
            "total_steps": run.schedule.total_steps,
            "train_seconds": clock.train_seconds,
            "elapsed_seconds": clock.elapsed(),
            **run.data.meta,
            **run.source,  # train.init_from: the source file and its sha256
        }
        with written(run.checkpoints.path(step)):  # a full disk: one line
            run.checkpoints.save(net, run.optimizer, meta, test_accuracy=test_accuracy)
        return run.checkpoints.last_seconds

    return on_root(comm, f"saving the checkpoint of step {step}", write, share=False)  # dist


def make_checkpoint_dir(cfg, comm, run_dir):
    return (
        CheckpointDir(run_dir, keep_last=cfg.train.keep_last, keep_best=cfg.train.keep_best)
        if comm.is_root
        else None
    )
