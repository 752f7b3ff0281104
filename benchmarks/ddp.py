"""PyTorch DistributedDataParallel (gloo) on the same nets, for benchmarks/scaling.py.

Needs torch (the CPU build, in a separate venv: it is not a dependency of mpinet). Each of
`ranks` processes trains torch_model(model) (benchmarks/speed.py: the same layer shapes)
on a synthetic batch of `batch` samples with SGD; rank 0 reports the median step time.
"""

import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from speed import torch_model


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, model, batch, steps, warmup, threads, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    net = torch.nn.parallel.DistributedDataParallel(torch_model(model))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(rank)
    x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
    t = torch.from_numpy(rng.integers(0, 10, batch))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), t).backward()  # DDP allreduces the gradient buckets here
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        with open(out, "w") as f:
            f.write(str(float(np.median(times))))
    dist.destroy_process_group()


def run_ddp(model, ranks, args):
    """Global samples/s of DDP with `ranks` processes, args.batch samples each."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "step")
        mp.spawn(
            _worker,
            nprocs=ranks,
            args=(
                ranks,
                model,
                args.batch,
                args.steps,
                args.warmup,
                args.threads,
                _free_port(),
                out,
            ),
        )
        with open(out) as f:
            return args.batch * ranks / float(f.read())
