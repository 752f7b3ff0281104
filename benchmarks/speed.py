"""Single-process training speed: samples/s of forward + backward + update, batch 100.

    python benchmarks/speed.py                      # every model, SGD and Adam, 1 and 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed.py   # native kernel
    python benchmarks/speed.py --check-torch        # mpinet's gradients vs PyTorch's, then exit
    python benchmarks/speed.py --book-layers        # the book's Convolution, Relu, Pooling

When `torch` is importable (install it in a separate venv; it is not a dependency of mpinet)
the same architectures run in PyTorch in the same process, measured in alternating rounds
with mpinet so that both see the same machine load, and each row gets the ratio
mpinet / PyTorch. Figures are medians of single steps.
"""

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from mpinet.model import build
from mpinet.model.optimizers import create

try:
    import torch
except ImportError:  # the benchmark runs without it, minus the PyTorch column
    torch = None

MODELS = {
    "mlp": {"name": "mlp", "hidden": [100, 100, 100, 100]},
    "simple_cnn": {"name": "simple_cnn"},
    "deep_cnn": {"name": "deep_cnn"},
}
LR = {"sgd": 0.01, "adam": 0.001}
# wall: what a user waits for. cpu: CPU time of the calling thread, which is steadier on a
# shared machine (time spent waiting for a core is left out); meaningful at 1 thread only.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def mpinet_step(spec, optimizer, n, fuse=True):
    """A function running one training step of mpinet on a fixed batch of n samples.

    fuse=False: the book's layers instead of FusedConvolution (build's fuse)."""
    net = build(spec, seed=0, fuse=fuse)
    opt = create(optimizer, lr=LR[optimizer])
    x, t = batch(n)

    def step():
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)

    return step


# -- PyTorch: the same layer shapes, batch, loss and optimizer --------------------------------


def torch_model(name, dropout=0.5):
    nn = torch.nn
    if name == "mlp":
        sizes = [784, 100, 100, 100, 100]
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        layers = [m for a, b in pairs for m in (nn.Linear(a, b), nn.ReLU())]
        return nn.Sequential(nn.Flatten(), *layers, nn.Linear(100, 10))
    if name == "simple_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 30, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(30 * 12 * 12, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
    layers, c_in = [], 1  # deep_cnn: the book's chapter 8 net, conv4 padded by 2
    for i, c in enumerate([16, 16, 32, 32, 64, 64]):
        layers += [nn.Conv2d(c_in, c, 3, padding=2 if i == 3 else 1), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if i % 2 else []
        c_in = c
    tail = [
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 50),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(50, 10),
        nn.Dropout(dropout),
    ]
    return nn.Sequential(*layers, *tail)


def torch_step(name, optimizer, n):
    model = torch_model(name)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR["sgd"])
    else:  # mpinet's Adam adds eps = 1e-7 outside the square root, as the book does
        opt = torch.optim.Adam(model.parameters(), lr=LR["adam"], eps=1e-7)
    x, t = batch(n)
    x, t = torch.from_numpy(x).reshape(n, 1, 28, 28), torch.from_numpy(t)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), t).backward()
        opt.step()

    return step


# -- measurement -----------------------------------------------------------------------------


def median_rates(steps, n, seconds, clock=time.perf_counter, rounds=3):
    """samples/s of each step function: alternating rounds, median of all timed steps."""
    times = [[] for _ in steps]
    for step in steps:
        step()  # warm-up: allocations, lazy optimizer state
    for _ in range(rounds):
        for step, ts in zip(steps, times, strict=True):
            start = time.perf_counter()
            while len(ts) < 2 or time.perf_counter() - start < seconds / rounds:
                t0 = clock()
                step()
                ts.append(clock() - t0)
    return [n / float(np.median(ts)) for ts in times]


def blas_kernels():
    return [
        (i["internal_api"], i.get("architecture"), i["version"])
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]


def run_table(args):
    with_torch = torch is not None and not args.no_torch
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    layers = "the book's Convolution, Relu, Pooling" if args.book_layers else "FusedConvolution"
    print(f"BLAS: {blas_kernels()} {env}; clock: {args.clock}; conv layers: {layers}")
    if with_torch:
        print(f"PyTorch {torch.__version__}")
    head = f"{'model':<12}{'optimizer':<10}{'threads':>8}{'mpinet/s':>12}"
    print(head + (f"{'PyTorch/s':>12}{'ratio':>8}" if with_torch else ""))
    # Threads outermost: once a library has run with 2 threads, its idle workers spin for a
    # while after each call and would slow the other library's 1-thread rows.
    for threads in args.threads:
        for name in args.models:
            for optimizer in args.optimizers:
                with threadpool_limits(threads, user_api="blas"):
                    fuse = not args.book_layers
                    steps = [mpinet_step(MODELS[name], optimizer, args.batch, fuse)]
                    if with_torch:
                        torch.set_num_threads(threads)
                        steps.append(torch_step(name, optimizer, args.batch))
                    rates = median_rates(steps, args.batch, args.seconds, CLOCKS[args.clock])
                row = f"{name:<12}{optimizer:<10}{threads:>8}{rates[0]:>12,.0f}"
                if with_torch:
                    row += f"{rates[1]:>12,.0f}{rates[0] / rates[1]:>8.2f}"
                print(row, flush=True)


# -- gradient check against PyTorch ----------------------------------------------------------


def check_torch(name, dtype, n=8):
    """Max relative difference (max |a - b| / max |b| per parameter) of the gradients."""
    net = build({**MODELS[name], "dropout": 0.0}, dtype=dtype, seed=1)
    model = torch_model(name, dropout=0.0).to(getattr(torch, dtype))
    linear = (torch.nn.Linear, torch.nn.Conv2d)
    modules = [m for m in model if isinstance(m, linear)]
    names = [k[:-2] for k in net.params if k.endswith(".W")]
    with torch.no_grad():  # the same weights: Linear keeps W as (out, in), the book (in, out)
        for m, k in zip(modules, names, strict=True):
            W = torch.from_numpy(net.params[f"{k}.W"].copy())
            m.weight.copy_(W.T if isinstance(m, torch.nn.Linear) else W)
            m.bias.copy_(torch.from_numpy(net.params[f"{k}.b"].copy()))
    x, t = batch(n, seed=2)
    x = x.astype(dtype)
    loss = net.loss(x, t)
    net.backward()
    tloss = torch.nn.CrossEntropyLoss()(
        model(torch.from_numpy(x).reshape(n, 1, 28, 28)), torch.from_numpy(t)
    )
    tloss.backward()
    worst = abs(loss - tloss.item()) / abs(tloss.item())
    for m, k in zip(modules, names, strict=True):
        tW = m.weight.grad.numpy()
        for ours, theirs in (
            (net.grads[f"{k}.W"], tW.T if tW.ndim == 2 else tW),
            (net.grads[f"{k}.b"], m.bias.grad.numpy()),
        ):
            worst = max(worst, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=list(LR))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="cpu: per-thread CPU time, for a loaded machine (1 thread only)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument(
        "--book-layers",
        action="store_true",
        help="time the book's Convolution -> Relu -> Pooling (build fuse=False)",
    )
    parser.add_argument(
        "--check-torch",
        action="store_true",
        help="compare loss and gradients with PyTorch for equal weights, exit",
    )
    args = parser.parse_args()
    if not args.check_torch:
        run_table(args)
        return
    if torch is None:
        raise SystemExit("--check-torch needs torch (pip install torch in a separate venv)")
    for name in args.models:
        for dtype in ("float64", "float32"):
            print(f"{name:<12}{dtype:<9} max relative difference {check_torch(name, dtype):.1e}")


if __name__ == "__main__":
    main()
