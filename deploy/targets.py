#!/usr/bin/env python3
"""Write the Prometheus file_sd targets of an mpinet job: one target per rank.

    python deploy/targets.py node1 node2 --ranks-per-host 4 --base-port 9400 > targets/run.json

Rank r on a host serves on base-port + its local rank, so a host running N ranks has
targets HOST:P .. HOST:P+N-1. Under Slurm, the hosts are
`scontrol show hostnames "$SLURM_JOB_NODELIST"`. Only the standard library: it runs on a
login node without mpinet installed.
"""

import argparse
import json
import sys


def targets(hosts, ranks_per_host, base_port, labels=None):
    """The file_sd document: one group per host, so a dead host shows as one group."""
    return [
        {
            "targets": [f"{host}:{base_port + i}" for i in range(ranks_per_host)],
            "labels": {"host": host, **(labels or {})},
        }
        for host in hosts
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", nargs="+", metavar="HOST", help="hosts running ranks")
    parser.add_argument("--ranks-per-host", type=int, required=True, metavar="N")
    parser.add_argument(
        "--base-port",
        type=int,
        default=9400,
        metavar="P",
        help="metrics.port of the job (default 9400)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra target label (repeatable), e.g. cluster=hpc1",
    )
    args = parser.parse_args(argv)
    if args.ranks_per_host < 1 or not 0 < args.base_port <= 65535 - args.ranks_per_host:
        parser.error("--ranks-per-host must be >= 1 and the ports must fit below 65536")
    if any("=" not in item for item in args.label):
        parser.error("--label expects KEY=VALUE")
    labels = dict(item.split("=", 1) for item in args.label)
    json.dump(
        targets(args.hosts, args.ranks_per_host, args.base_port, labels), sys.stdout, indent=2
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
