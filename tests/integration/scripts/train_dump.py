"""Train with the real loop under mpiexec (or alone) and save each rank's parameters.

train_dump.py OUT_DIR [section.key=value ...]  ->  OUT_DIR/params.rank<r>.npy
"""

import sys
from pathlib import Path

import numpy as np

from mpinet.cluster import abort_on_error, auto
from mpinet.worker.config import load_config
from mpinet.worker.log import setup_logging
from mpinet.worker.loop import train

out = Path(sys.argv[1])
comm = auto()
setup_logging(comm.rank, comm.world_size)
with abort_on_error(comm, user_errors=(ValueError, OSError)):
    cfg = load_config(None, sys.argv[2:])
    _, net = train(cfg, comm, out)
    np.save(out / f"params.rank{comm.rank}.npy", net.buffer.data)
