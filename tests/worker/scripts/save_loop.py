"""Save checkpoints in a loop until killed: the writer of the kill-during-save test.

    python save_loop.py RUN_DIR

Continues from the newest valid checkpoint (as a resumed run would), prints "ready" once
set up and "saved STEP" after each save() has returned.
"""

import sys

from mpinet.model import build
from mpinet.model.optimizers import create
from mpinet.worker.checkpoint_dir import CheckpointDir, find_resume

run_dir = sys.argv[1]
net = build({"name": "mlp", "hidden": [700, 700]}, seed=0)  # 1M parameters: 12 MB files
optimizer = create("adam")
net.buffer.grad[...] = 0.5
optimizer.update(net.buffer.data, net.buffer.grad)  # so that m and v exist
found = find_resume(run_dir)  # None: nothing saved yet
step = 0 if found is None else int(found.meta["step"])
checkpoints = CheckpointDir(run_dir, keep_last=2)
print("ready", flush=True)
while True:
    step += 1
    net.buffer.data[:1000] = step  # each file differs from the last
    checkpoints.save(net, optimizer, {"step": step, "epoch": 0})
    print(f"saved {step}", flush=True)
