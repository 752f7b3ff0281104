"""The allreduced gradient of N ranks equals the one-process gradient of the global batch.

Each rank takes its contiguous slice of one fixed global batch (float64), computes its
gradient, and the ranks allreduce_mean_ it; every rank then compares with the gradient of
the whole batch computed alone. Exit 0 and print the worst difference, or exit 1.
"""

import sys

import numpy as np

from mpinet.cluster import world
from mpinet.model import build

comm = world()
name, tolerance = sys.argv[1], float(sys.argv[2])
spec = {"name": name, "dropout": 0.0} if name != "mlp" else {"name": name, "hidden": [50, 30]}
rng = np.random.default_rng(0)
x, t = rng.random((24, 784)), rng.integers(0, 10, 24)
net = build(spec, dtype="float64", seed=1)
share = len(x) // comm.world_size
mine = slice(comm.rank * share, (comm.rank + 1) * share)
net.loss(x[mine], t[mine])
net.backward()
comm.allreduce_mean_(net.buffer.grad)
distributed = net.buffer.grad.copy()
net.loss(x, t)
net.backward()
worst = float(np.max(np.abs(distributed - net.buffer.grad)) / np.max(np.abs(net.buffer.grad)))
print(
    f"rank {comm.rank}: max |distributed - whole batch| / max |gradient| = {worst:.3g} "
    f"(tolerance {tolerance:.3g})",
    flush=True,
)
sys.exit(0 if worst < tolerance else 1)
