"""Weight initialisation (book section 6.2): the distribution of hidden activations for
std 1, std 0.01, Xavier and He, with sigmoid and with ReLU, and the training curves they
lead to on MNIST.

Activations: 1000 random inputs (100 features) through 5 hidden layers of 100 units (an
mpinet MLP; each activation layer keeps its output in `.out`). What to look for:
- sigmoid, std 1: the outputs pile up at 0 and 1, where the gradient vanishes;
- std 0.01: every unit outputs about the same value (sigmoid) or ~0 (ReLU): no expressiveness;
- Xavier (std sqrt(1/n)) keeps sigmoid spread out; He (sqrt(2/n)) does the same for ReLU.

    python examples/07_weight_init.py [--steps 2000] [--out DIR] [--data H5]
"""

import numpy as np
from common import example_parser, load_mnist, plt, save, train

from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create

INITS = {"std 1": 1.0, "std 0.01": 0.01, "Xavier": "xavier", "He": "he"}


def activations(activation, init, seed=0):
    """The outputs of the 5 hidden activation layers for 1000 N(0, 1) inputs."""
    net = build(
        {
            "name": "mlp",
            "input_shape": [100],
            "hidden": [100] * 5,
            "activation": activation,
            "init": init,
        },
        dtype="float64",
        seed=seed,
    )
    net.forward(np.random.default_rng(seed).standard_normal((1000, 100)))
    return [layer.out for name, layer in net.layers.items() if name.startswith(activation)]


def histograms(out):
    """One panel per (activation, init), the 5 layers' histograms overlaid; -> layer-5 stds."""
    fig, axes = plt.subplots(2, len(INITS), figsize=(12, 5.5), layout="constrained")
    spread = {}
    for row, activation in enumerate(("sigmoid", "relu")):
        spread[activation] = {}
        for col, (label, init) in enumerate(INITS.items()):
            acts = activations(activation, init)
            spread[activation][label] = float(acts[-1].std())
            ax = axes[row, col]
            for k, a in enumerate(acts):
                if activation == "relu":
                    a = a[a > 0]  # about half are exactly 0 and would hide the rest
                ax.hist(a.ravel(), bins=30, range=(0, 1), histtype="step", label=f"layer {k + 1}")
            ax.set_title(f"{activation}, {label}", fontsize=9)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        "hidden-layer activations of 1000 random inputs "
        "(outputs in [0, 1] shown; ReLU: the non-zero ones)"
    )
    save(fig, out, "activations.png")
    return spread


def main(argv=None):
    p = example_parser(__doc__, "07_weight_init")
    p.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="SGD steps of batch 128 for each init (default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="30 training steps on 1000 samples, for a smoke test (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)
    steps, n_train = (30, 1000) if args.quick else (args.steps, 60000)

    spread = histograms(args.out)
    for act, by_init in spread.items():
        print(
            f"std of layer-5 {act} outputs: "
            + ", ".join(f"{k} {v:.3f}" for k, v in by_init.items())
        )

    # Training: the book's 5-layer ReLU MLP, SGD lr 0.01, batch 128, from the book's three
    # inits. (std 1 with ReLU overflows to NaN within a few steps: the activations above
    # grow by ~sqrt(50) per layer.)
    x, t, _, _ = load_mnist(args.data, n_train=n_train, n_test=1)
    fig, ax = plt.subplots(figsize=(6, 4))
    final = {}
    for label in ("std 0.01", "Xavier", "He"):
        net = build({"name": "mlp", "init": INITS[label]}, seed=0)
        losses, _, _ = train(
            net, create("sgd", lr=0.01), x, t, steps, batch_size=128, label=f"init {label}"
        )
        final[label] = float(losses[-max(steps // 10, 1) :].mean())
        ax.plot(losses, label=label, lw=0.8)
        print(f"init {label:8s}: loss of the last 10% of steps {final[label]:.4f}")
    ax.set(
        xlabel="step",
        ylabel="training loss",
        yscale="log",
        title="MNIST, ReLU MLP 4x100, SGD lr 0.01",
    )
    ax.legend()
    save(fig, args.out, "training.png")
    return {"spread": spread, "final_loss": final}


if __name__ == "__main__":
    main()
