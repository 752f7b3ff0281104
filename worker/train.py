"""`mpinet train`: the same command alone (local mode) and under `mpirun -n N`."""

import logging
import os
import time
from pathlib import Path

from mpinet.cluster import abort_on_error, auto, fail_together, launched_by_mpi

from .config import load_config, write_config
from .log import setup_logging
from .loop import train
from .resume import EXIT_PREEMPTED

HELP = "train the network, alone or as one rank of `mpirun -n N mpinet train`"
USER_ERRORS = (ValueError, OSError)
log = logging.getLogger("mpinet.worker")


def add_arguments(parser):
    parser.add_argument("--config", metavar="FILE.toml", help="a TOML config file")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override one config key (repeatable)")
    parser.add_argument("--data", metavar="FILE.h5", help="the HDF5 data file (= data.path)")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="where config, history and summary go (default runs/<time>)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from the newest valid checkpoint of --run-dir (auto) "
                             "or from this checkpoint file")
    parser.add_argument("--log-all-ranks", action="store_true",
                        help="log INFO from every rank, not only rank 0")
    parser.add_argument("--log-json", action="store_true",
                        help="one JSON object per log line (for log shippers)")


def run(args):
    check_launcher(os.environ)
    comm = auto()
    setup_logging(comm.rank, comm.world_size, args.log_all_ranks, json_lines=args.log_json)
    with abort_on_error(comm, user_errors=USER_ERRORS):
        overrides = list(args.overrides) + ([f"data.path={args.data!r}"] if args.data else [])
        cfg, error = None, None
        try:
            cfg = load_config(args.config, overrides)
        except USER_ERRORS as e:
            error = e
        fail_together(comm, "reading the config", error)  # dist: every rank exits together
        comm.timeout = cfg.train.collective_timeout
        run_dir = make_run_dir(comm, args.run_dir, resuming=args.resume is not None)
        if comm.is_root:
            write_config(cfg, run_dir)
        summary, _ = train(cfg, comm, run_dir, resume=args.resume)
        if summary["preempted"]:
            return EXIT_PREEMPTED
        if comm.is_root:
            log.info("done: test accuracy %.4f (best %.4f) after %d steps in %.1f s; %s",
                     summary["final_test_accuracy"], summary["best_test_accuracy"],
                     summary["steps"], summary["wall_seconds"], run_dir)
    return 0


def check_launcher(environ):
    """srun without an MPI plugin starts N independent copies, each training alone."""
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1") or 1)  # set by srun, not sbatch
    if tasks > 1 and not launched_by_mpi(environ):
        raise ValueError(f"Slurm started {tasks} tasks, but none is an MPI rank (no PMI "
                         f"variables): use `srun --mpi=pmi2` (or pmix), or mpirun inside "
                         f"the allocation")


def make_run_dir(comm, requested, resuming=False):
    """Rank 0 names and creates the run directory; every rank learns its name."""
    error, path = None, None
    if comm.is_root:
        path = Path(requested) if requested else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        try:
            path.mkdir(parents=True, exist_ok=True)
            if (path / "history.jsonl").exists() and not resuming:
                raise ValueError(f"run directory {path} already holds a run (history.jsonl); "
                                 f"continue it with --resume auto, or choose another --run-dir")
        except (ValueError, OSError) as e:
            error = e
    fail_together(comm, "creating the run directory", error)  # dist
    return Path(comm.bcast_object(str(path), root=0))
