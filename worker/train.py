"""`mpinet train`: the same command alone (local mode) and under `mpirun -n N`."""

import logging
import os
import signal
import sys

from mpinet.cluster import EXIT_INTERRUPTED, abort_on_error, auto, launched_by_mpi, on_root

from .config import to_toml
from .log import setup_logging
from .loop import train
from .resume import resolve_start

HELP = "train the network, alone or as one rank of `mpirun -n N mpinet train`"
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--config", metavar="FILE.toml", help="a TOML config file")
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key (repeatable)",
    )
    parser.add_argument("--data", metavar="FILE.h5", help="the HDF5 data file (= data.path)")
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="where config, history, checkpoints and summary go (default runs/<time>)",
    )
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from the newest valid checkpoint of --run-dir (auto), "
        "or from this checkpoint file, run directory or its "
        "checkpoints/latest; the run's own config is the base",
    )
    parser.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the parameters of this checkpoint file, run directory or its "
        "checkpoints/latest, by name (= train.init_from; not with --resume)",
    )
    parser.add_argument(
        "--profile",
        metavar="START:COUNT",
        help="trace COUNT steps from step START (from 0) on every rank into RUN_DIR/trace.json "
        "(= train.profile; open it in Perfetto)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config (TOML) and exit",
    )
    parser.add_argument(
        "--log-all-ranks", action="store_true", help="log INFO from every rank, not only rank 0"
    )
    parser.add_argument(
        "--log-json", action="store_true", help="one JSON object per log line (for log shippers)"
    )


def run(args):
    check_launcher(os.environ)
    comm = auto()
    setup_logging(comm.rank, comm.world_size, args.log_all_ranks, json_lines=args.log_json)
    with abort_on_error(comm):
        overrides = list(args.overrides) + ([f"data.path={args.data!r}"] if args.data else [])
        overrides += [f"train.profile={args.profile!r}"] if args.profile is not None else []
        overrides += [f"train.init_from={args.init_from!r}"] if args.init_from else []
        # rank 0 reads the checkpoint (if any) and resolves the config; an error is the job's
        # (the same flags everywhere), so it is said without "on rank 0"
        start = on_root(comm, None, lambda: resolve_start(args, overrides), share=False)  # dist
        cfg, run_dir = comm.bcast_object(start[:2] if comm.is_root else None, root=0)  # dist
        ckpt = start[2] if comm.is_root else None
        if args.print_config:
            if comm.is_root:
                print_config(cfg)
            return 0
        comm.timeout = cfg.train.collective_timeout
        summary, _ = train(cfg, comm, run_dir, ckpt)
        if summary is None or summary["exit_code"]:  # already complete, or stopped
            if summary is not None and summary["exit_code"] == EXIT_INTERRUPTED:
                # stopped and saved for a Ctrl-C: what is left is the exit itself, which
                # another Ctrl-C must not turn into a traceback
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            return 0 if summary is None else summary["exit_code"]
        if summary["final_test_accuracy"] is None:  # stopped before any evaluation
            log.info(
                "done: %d steps in %.1f s, no evaluation yet; %s",
                summary["steps"],
                summary["wall_seconds"],
                run_dir,
            )
        else:
            log.info(
                "done: test accuracy %.4f (best %.4f) after %d steps in %.1f s; %s",
                summary["final_test_accuracy"],
                summary["best_test_accuracy"],
                summary["steps"],
                summary["wall_seconds"],
                run_dir,
            )
    return 0


def print_config(cfg):
    """The resolved config on stdout; the data file an empty data.path means, as a comment."""
    from mpinet.data.prepare import default_out

    text = to_toml(cfg)
    if not cfg.data.path:
        text = text.replace('path = ""', f'path = ""  # = {default_out(cfg.data.dataset)}', 1)
    sys.stdout.write(text)


def check_launcher(environ):
    """srun without an MPI plugin starts N independent copies, each training alone."""
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1") or 1)  # set by srun, not sbatch
    if tasks > 1 and not launched_by_mpi(environ):
        raise ValueError(
            f"Slurm started {tasks} tasks, but none is an MPI rank (no PMI "
            f"variables): use `srun --mpi=pmi2` (or pmix), or mpirun inside "
            f"the allocation"
        )
