"""`python -m mpinet.data`: the same as `mpinet prepare`, without the rest of mpinet's CLI."""

import argparse
import sys

from .messages import one_line
from .prepare import HELP, add_arguments, run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpinet.data", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as e:  # bad input: one line, no traceback
        print(f"mpinet prepare: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
