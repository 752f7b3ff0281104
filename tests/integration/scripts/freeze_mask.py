"""Every rank builds the frozen mask of train.freeze; rank 1 freezes one layer more when told.

freeze_mask.py same|differ  ->  "rank r: N values frozen" for every rank (rank 0 prints them),
or the mask check's one line and exit 2 on every rank (never a hang, never an MPI Abort).
"""

import sys

from mpinet.cluster import abort_on_error, auto
from mpinet.model import build
from mpinet.worker.config import load_config
from mpinet.worker.log import setup_logging
from mpinet.worker.transfer import Frozen

comm = auto()
setup_logging(comm.rank, comm.world_size)
freeze = ["affine1", "affine2"] if sys.argv[1] == "differ" and comm.rank == 1 else ["affine1"]
with abort_on_error(comm):
    cfg = load_config(None, ["model.name='mlp'", "model.hidden=[16, 8]", f"train.freeze={freeze}"])
    net = build({"name": "mlp", "hidden": [16, 8]}, seed=0)
    frozen = Frozen(cfg, comm, net)
    sizes = comm.gather_object(frozen.size, root=0)  # one writer: ranks' lines never interleave
    if comm.is_root:
        print("\n".join(f"rank {r}: {size} values frozen" for r, size in enumerate(sizes)))
