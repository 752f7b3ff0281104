"""Single-process training speed: samples/s of forward + backward + update, batch 100.

    python benchmarks/speed.py                      # every model, SGD and Adam, 1 and 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed.py   # native kernel
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from mpinet.model import build
from mpinet.model.optimizers import create

MODELS = {"mlp": {"name": "mlp", "hidden": [100, 100, 100, 100]},
          "simple_cnn": {"name": "simple_cnn"}, "deep_cnn": {"name": "deep_cnn"}}


def samples_per_second(spec, optimizer, batch, seconds):
    net = build(spec, seed=0)
    opt = create(optimizer, lr=0.01 if optimizer == "sgd" else 0.001)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    t = rng.integers(0, 10, batch)
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    blas = [(i["internal_api"], i.get("architecture"), i["version"]) for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"BLAS: {blas}")
    print(f"{'model':<12}{'optimizer':<10}{'threads':>8}{'samples/s':>12}")
    for name in args.models:
        for optimizer in args.optimizers:
            for threads in args.threads:
                with threadpool_limits(threads, user_api="blas"):
                    sps = samples_per_second(MODELS[name], optimizer, args.batch, args.seconds)
                print(f"{name:<12}{optimizer:<10}{threads:>8}{sps:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
