"""The `mpinet` console script: one parser, one sub-command per user task.

Each sub-command lives in the module that owns it; this file only wires them up and turns
user errors (bad files, flags, config keys) into a one-line message and a non-zero exit.
"""

import argparse
import os
import sys

# The one error policy (cluster/errors.py): what is the user's, and the exit codes.
from mpinet.cluster import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS
from mpinet.data.messages import one_line

from .environment import package_version


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mpinet",
        description="Train the network of 'Deep Learning from Scratch' data-parallel with MPI.",
    )
    parser.add_argument("--version", action="version", version=f"mpinet {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        mod = _import(module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def _import(module):
    import importlib

    return importlib.import_module(module)


# name -> module with HELP, add_arguments(parser) and run(args) -> exit code
SUBCOMMANDS = {
    "prepare": "mpinet.data.prepare",
    "train": "mpinet.worker.train",
    "eval": "mpinet.worker.evaluate",
    "predict": "mpinet.worker.predict",
    "serve": "mpinet.worker.serve",
    "plot": "mpinet.worker.plots",
    "report": "mpinet.worker.report",
    "export": "mpinet.worker.export",
    "search": "mpinet.worker.search",
    "scale": "mpinet.worker.scale",
}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(
            "mpinet: error: no command given; expected one of "
            f"{', '.join(SUBCOMMANDS)}; see mpinet --help",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    try:
        return args.run(args) or 0
    except USER_ERRORS as e:
        if os.environ.get("MPINET_TRACEBACK"):
            raise
        print(f"mpinet {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # `train` handles its own Ctrl-C; the others just stop
        print(f"mpinet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def print_out(text):
    """print() for a command's result: a reader that stops early (`mpinet eval R | head -1`)
    is not an error, so a closed pipe ends the output quietly, as for other Unix tools."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail


if __name__ == "__main__":
    sys.exit(main())
