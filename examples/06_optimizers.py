"""Optimizers on MNIST (book section 6.1.8): SGD, Momentum, Nesterov, AdaGrad, RMSprop and
Adam train the same MLP (784-100-100-100-100-10, ReLU, He init) from the same weights, on
the same mini-batches; their loss curves go in one plot.

The learning rates are the book's (0.01 for all, 0.001 for Adam). Each optimizer updates the
whole flat parameter buffer in one vectorised step, as the distributed worker does.

    python examples/06_optimizers.py [--steps 1000] [--train 60000] [--out DIR] [--data H5]
"""

import numpy as np
from common import example_parser, load_mnist, plt, save, train

from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create

LEARNING_RATES = {
    "sgd": 0.01,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "rmsprop": 0.01,
    "adam": 0.001,
}


def smooth(y, k=20):
    return np.convolve(y, np.ones(k) / k, mode="valid") if len(y) > k else y


def main(argv=None):
    p = example_parser(__doc__, "06_optimizers")
    p.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="steps of batch 128 for each optimizer (default: %(default)s)",
    )
    p.add_argument(
        "--train", type=int, default=60000, help="training samples used (default: %(default)s)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="30 steps on 500 samples, for a smoke test (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)
    steps, n_train = (30, 500) if args.quick else (args.steps, args.train)

    x, t, _, _ = load_mnist(args.data, n_train=n_train, n_test=1)
    curves, final = {}, {}
    for name, lr in LEARNING_RATES.items():
        net = build({"name": "mlp"}, seed=0)  # same weights for every optimizer
        curves[name], _, _ = train(
            net, create(name, lr=lr), x, t, steps, batch_size=128, label=name
        )
        final[name] = float(curves[name][-max(steps // 10, 1) :].mean())
        print(f"{name:9s} lr {lr:<6} mean loss of the last 10% of steps: {final[name]:.4f}")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, losses in curves.items():
        ax.plot(smooth(losses), label=name)
    ax.set(
        xlabel="step (batch 128)",
        ylabel="training loss (moving average of 20)",
        yscale="log",
        title=f"MNIST, MLP 4x100, {steps} steps",
    )
    ax.legend()
    save(fig, args.out, "losses.png")
    return final


if __name__ == "__main__":
    main()
