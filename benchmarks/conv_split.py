"""Where a CNN's step goes, per convolution: the im2col copies, the GEMMs, and the rest.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/conv_split.py
    ... benchmarks/conv_split.py --models deep_cnn --steps 60

Forward and backward of the network on a fixed batch (float32, batch 100, one BLAS thread,
no optimizer). Each FusedConvolution's forward and backward are timed whole, and inside them
every call of the two functions that do the heavy work: copy_windows (the im2col copy) and
np.matmul (the GEMMs). The rest is everything else the layer does: padding, the bias, the
pooling and its masks, the ReLU, the unpooling, the bias gradient. The timers wrap the
module's own references to those functions (fused_conv.copy_windows, fused_conv.np), so
the layers run unchanged; they add about 1 us a call, a few percent of the step.

The GEMM limit of a net is its FLOPs per sample (speed.py --cost) at the square float32
GEMM's rate (speed.py prints it); the GEMMs here run at their own shapes' rates, so their
sum says how close to that limit even a step with no copies and no rest could come.
"""

import argparse
import time
import types

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import mpinet.model.fused_conv as fused_conv
from mpinet.model import build

WARMUP = 10


class Timers:
    """Seconds per (layer, pass, what): what is 'total', 'copy' or 'gemm'."""

    def __init__(self):
        self.seconds, self.where = {}, None

    def add(self, key, seconds):
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def wrap(self, what, function):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            result = function(*args, **kwargs)
            self.add((*self.where, what), time.perf_counter() - t0)
            return result

        return timed

    def wrap_pass(self, layer, name, method):
        function = getattr(layer, method)

        def timed(*args, **kwargs):
            self.where = (name, method)
            t0 = time.perf_counter()
            result = function(*args, **kwargs)
            self.add((name, method, "total"), time.perf_counter() - t0)
            return result

        setattr(layer, method, timed)


def instrument(timers):
    """fused_conv's copy_windows and np.matmul, timed (numpy itself is left alone)."""
    numpy = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("_")})
    numpy.matmul = timers.wrap("gemm", np.matmul)
    fused_conv.np = numpy
    fused_conv.copy_windows = timers.wrap("copy", fused_conv.copy_windows)


def measure(model, steps, timers):
    net = build({"name": model}, seed=0, dropout_seed=(0, 0))
    convs = [k for k, layer in net.layers.items() if isinstance(layer, fused_conv.FusedConvolution)]
    for name in convs:
        for method in ("forward", "backward"):
            timers.wrap_pass(net.layers[name], name, method)
    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 100)
    step_seconds = []
    for i in range(WARMUP + steps):
        if i == WARMUP:
            timers.seconds.clear()
        t0 = time.perf_counter()
        net.loss(x, t)
        net.backward()
        step_seconds.append(time.perf_counter() - t0)
    return convs, float(np.median(step_seconds[WARMUP:]))


def report(model, convs, step, timers, steps):
    ms = {key: seconds / steps * 1e3 for key, seconds in timers.seconds.items()}
    print(f"\n{model}: forward + backward {step * 1e3:.2f} ms a step (median)")
    print("| layer | pass | ms | im2col copy | GEMMs | rest |\n|---|---|---:|---:|---:|---:|")
    sums = np.zeros(3)
    for method, order in (("forward", convs), ("backward", convs[::-1])):
        for name in order:
            row = [ms.get((name, method, what), 0.0) for what in ("total", "copy", "gemm")]
            sums += row
            print(row_line(name, method, *row))
    print(row_line("all convolutions", "", *sums))
    total, copy, gemm = sums
    rest = total - copy - gemm
    print(f"shares: GEMMs {gemm / total:.0%}, copies {copy / total:.0%}, rest {rest / total:.0%}")


def row_line(name, method, total, copy, gemm):
    return (
        f"| {name} | {method} | {total:.2f} | {copy:.2f} | {gemm:.2f} | {total - copy - gemm:.2f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["simple_cnn", "deep_cnn"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    args = parser.parse_args()
    threadpool_limits(1)
    blas = [(i["internal_api"], i.get("architecture"), i["version"]) for i in threadpool_info()]
    print("BLAS:", blas)
    timers = Timers()
    instrument(timers)
    for model in args.models:
        convs, step = measure(model, args.steps, timers)
        report(model, convs, step, timers, args.steps)


if __name__ == "__main__":
    main()
