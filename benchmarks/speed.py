"""Single-process training speed: samples/s of forward + backward + update, batch 100.

    python benchmarks/speed.py                      # every model, SGD and Adam, 1 and 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed.py   # native kernel
    python benchmarks/speed.py --check-torch        # mpinet's gradients vs PyTorch's, then exit
    python benchmarks/speed.py --book-layers        # the book's Convolution, Relu, Pooling
    python benchmarks/speed.py --cost               # parameters and multiply-adds per sample

When `torch` is importable (install it in a separate venv; it is not a dependency of mpinet)
the same architectures run in PyTorch in the same process, measured in alternating rounds
with mpinet so that both see the same machine load, and each row gets the ratio
mpinet / PyTorch. Figures are medians of single steps. Chapter 8's nets (vgg, googlenet,
resnet) run in PyTorch as a translation of mpinet's plan, entry by entry (torch_from_plan):
the same architecture, with PyTorch's own convolution, BatchNorm, pooling, sum and concat.
"""

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from mpinet.model import build
from mpinet.model.builders import PLANS
from mpinet.model.cost import cost
from mpinet.model.optimizers import create
from mpinet.model.spec import resolve_spec

try:
    import torch
except ImportError:  # the benchmark runs without it, minus the PyTorch column
    torch = None

MODELS = {
    "mlp": {"name": "mlp", "hidden": [100, 100, 100, 100]},
    "simple_cnn": {"name": "simple_cnn"},
    "deep_cnn": {"name": "deep_cnn"},
    "vgg": {"name": "vgg"},
    "googlenet": {"name": "googlenet"},
    "resnet": {"name": "resnet"},
}
FROM_PLAN = ("vgg", "googlenet", "resnet")  # PyTorch's version: torch_from_plan
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


def torch_model(name, dropout=None):
    """PyTorch's version of a MODELS net; dropout None: the spec's own rate."""
    nn = torch.nn
    if name in FROM_PLAN:
        spec = MODELS[name] if dropout is None else {**MODELS[name], "dropout": dropout}
        return torch_from_plan(spec)
    dropout = 0.5 if dropout is None else dropout
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


def torch_from_plan(spec):
    """A torch.nn module for the book plan (fuse=False) of a spec, one module per entry."""
    spec = resolve_spec(spec)

    class Residual(torch.nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + self.shortcut(x)

    class Inception(torch.nn.Module):
        def __init__(self, branches):
            super().__init__()
            self.branches = torch.nn.ModuleList(branches)

        def forward(self, x):
            return torch.cat([branch(x) for branch in self.branches], dim=1)  # NCHW

    def module(kind, a, after):
        nn = torch.nn
        if kind == "residual":
            return Residual(sequential(a["body"]), sequential(a["shortcut"]))
        if kind == "inception":
            return Inception([sequential(branch) for branch in a["branches"]])
        simple = {
            "to_nhwc": nn.Identity,  # the input arrives as (N, C, H, W) already
            "conv": lambda: nn.Conv2d(
                a["shape"][1], a["shape"][0], a["shape"][2], a["stride"], a["pad"]
            ),
            "bn": lambda: (nn.BatchNorm1d if after == "affine" else nn.BatchNorm2d)(a["size"]),
            "relu": nn.ReLU,
            "pool": lambda: nn.MaxPool2d(a["size"], a.get("stride"), a.get("pad", 0)),
            "flatten": nn.Flatten,
            "gap": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            "affine": lambda: nn.Linear(*a["shape"]),
            "dropout": lambda: nn.Dropout(a["ratio"]),
        }
        return simple[kind]()

    def sequential(plan):
        kinds = [None] + [kind for _, kind, _ in plan]  # each entry's predecessor
        return torch.nn.Sequential(*[module(k, a, kinds[i]) for i, (_, k, a) in enumerate(plan)])

    return sequential(PLANS[spec["name"]](spec))


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


def _pairs(net, model):
    """(PyTorch module, mpinet layer name, its (weight, bias) names) in construction order."""
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    modules = [m for m in model.modules() if isinstance(m, kinds)]
    names = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in net.params))  # conv1, bn_conv1, ...
    views = [("W", "b") if f"{k}.W" in net.params else ("gamma", "beta") for k in names]
    return zip(modules, names, views, strict=True)


def check_torch(name, dtype, n=8):
    """Max relative differences (max |a - b| / max |b|) of the logits, loss and gradients
    (the worst parameter) for the same weights and batch, in training mode, dropout 0.

    A conv bias before BatchNorm has gradient 0 in exact arithmetic (the normalisation
    removes it): both libraries give rounding noise there, compared as "null gradients",
    their largest |value| / the largest gradient of the net."""
    net = build({**MODELS[name], "dropout": 0.0}, dtype=dtype, seed=1)
    model = torch_model(name, dropout=0.0).to(getattr(torch, dtype))
    with torch.no_grad():  # the same weights: Linear keeps W as (out, in), the book (in, out)
        for m, k, (w, b) in _pairs(net, model):
            W = torch.from_numpy(net.params[f"{k}.{w}"].copy())
            m.weight.copy_(W.T if isinstance(m, torch.nn.Linear) else W)
            m.bias.copy_(torch.from_numpy(net.params[f"{k}.{b}"].copy()))
    x, t = batch(n, seed=2)
    x = x.astype(dtype)
    logits = net.forward(x)
    loss = net.loss(x, t)
    net.backward()
    tlogits = model(torch.from_numpy(x).reshape(n, 1, 28, 28))
    tloss = torch.nn.CrossEntropyLoss()(tlogits, torch.from_numpy(t))
    tloss.backward()
    tlogits = tlogits.detach().numpy()
    worst = {
        "logits": float(np.abs(logits - tlogits).max() / np.abs(tlogits).max()),
        "loss": abs(loss - tloss.item()) / abs(tloss.item()),
        "gradients": 0.0,
        "null gradients": 0.0,
    }
    scale = float(np.abs(net.buffer.grad).max())
    for m, k, (w, b) in _pairs(net, model):
        tW = m.weight.grad.numpy()
        for ours, theirs in (
            (net.grads[f"{k}.{w}"], tW.T if isinstance(m, torch.nn.Linear) else tW),
            (net.grads[f"{k}.{b}"], m.bias.grad.numpy()),
        ):
            top = float(np.abs(theirs).max())
            if top <= 1e-5 * scale:  # a bias before BatchNorm
                null = max(top, float(np.abs(ours).max())) / scale
                worst["null gradients"] = max(worst["null gradients"], null)
            else:
                diff = float(np.abs(ours - theirs).max()) / top
                worst["gradients"] = max(worst["gradients"], diff)
    return worst


def print_cost(names):
    """README's table: trainable parameters, forward multiply-adds per sample (cost.py)."""
    print("| model | parameters | multiply-adds / sample |\n|---|---:|---:|")
    for name in names:
        params, macs = cost(MODELS[name])
        print(f"| {name} | {params:,} | {macs / 1e6:.2f} M |")


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
    parser.add_argument(
        "--cost", action="store_true", help="print parameters and multiply-adds per sample, exit"
    )
    args = parser.parse_args()
    if args.cost:
        print_cost(args.models)
        return
    if not args.check_torch:
        run_table(args)
        return
    if torch is None:
        raise SystemExit("--check-torch needs torch (pip install torch in a separate venv)")
    for name in args.models:
        for dtype in ("float64", "float32"):
            worst = check_torch(name, dtype)
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
            print(f"{name:<12}{dtype:<9} max relative difference: {diffs}")


if __name__ == "__main__":
    main()
