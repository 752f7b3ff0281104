"""Logging: one handler on stderr, tagged with the rank; rank 0 at INFO, others at WARNING.

This is nanoGPT's `master_process` gate done with log levels: every rank can still warn.
Every module logs to `logging.getLogger(__name__)` ("mpinet.worker.train", "mpinet.cluster.abort",
...): children of the "mpinet" logger configured here, so one handler serves them all.
With `json_lines=True` each record is one JSON object per line instead (for log shippers
such as Fluent Bit, Vector or Promtail, which then need no parsing rules).
"""

import json
import logging
import sys
import time


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, rank, world_size, logger,
    message, and the exception text when there is one."""

    def __init__(self, rank, world_size):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def format(self, record):
        event = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "rank": self.rank,
            "world_size": self.world_size,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event)


def setup_logging(rank=0, world_size=1, all_ranks=False, level=logging.INFO, json_lines=False):
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLinesFormatter(rank, world_size))
    else:
        fmt = f"%(asctime)s [rank {rank}/{world_size}] %(levelname)s %(message)s"
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger("mpinet")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(level if rank == 0 or all_ranks else logging.WARNING)
    return root
