"""Adam's update with and without flushing denormal state (model/optimizers.py).

The mlp trains 2,500 Adam steps on one fixed batch of 100 MNIST images (the first 100 of the
prepared file), so the moments of always-zero gradients decay; the median time of the last
500 updates is printed for the flush every 100 steps (mpinet's) and for none, twice each.

    python benchmarks/denormals.py [--data mnist.h5]
"""

import argparse
import os
import time

import h5py
import numpy as np

from mpinet.model import build, optimizers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mpinet", "mnist.h5"
    )
    parser.add_argument("--data", default=default, help="a file `mpinet prepare` wrote")
    args = parser.parse_args()
    with h5py.File(args.data) as f:
        x = f["train/images"][:100].astype(np.float32).reshape(100, -1) / 255.0
        t = f["train/labels"][:100].astype(np.int64)
    for _ in range(2):
        for every in (100, None):
            ms, denormals = run(x, t, every)
            label = f"every {every} steps" if every else "never"
            print(
                f"flush {label:>16}: Adam update {ms:.3f} ms (median of the last 500 of "
                f"2500 steps); denormals left in m: {denormals}"
            )


def run(x, t, flush_every, steps=2500):
    optimizers.FLUSH_EVERY = flush_every or 10**12
    net = build({"name": "mlp"}, seed=0)
    opt = optimizers.create("adam", lr=1e-3)
    times = []
    for _ in range(steps):
        net.loss(x, t)
        net.backward()
        t0 = time.perf_counter()
        opt.update(net.buffer.data, net.buffer.grad)
        times.append(time.perf_counter() - t0)
    tiny = np.finfo(opt.m.dtype).tiny
    denormals = int(np.count_nonzero((opt.m != 0) & (np.abs(opt.m) < tiny)))
    return np.median(times[-500:]) * 1e3, denormals


if __name__ == "__main__":
    main()
