"""Batch normalisation (book section 6.3): the same MLP trained with and without it, from
several weight-init scales.

The book's experiment: 1000 MNIST training samples, a 784-100x5-10 ReLU net, SGD lr 0.01,
batch 100, 20 epochs, weights drawn with a fixed std. Without batchnorm, training only
moves for a narrow band of scales; with it (BatchNormalization after every Affine but the
last), it learns from a much wider range, and faster (RESULTS.md has the measured table).

    python examples/08_batchnorm.py [--epochs 20] [--scales 6] [--out DIR] [--data H5]
"""

import numpy as np
from common import example_parser, load_mnist, plt, save, train

from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create


def main(argv=None):
    p = example_parser(__doc__, "08_batchnorm")
    p.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="epochs over the 1000 training samples (default: %(default)s)",
    )
    p.add_argument(
        "--scales",
        type=int,
        default=6,
        help="how many init stds, log-spaced from 1 down to 1e-4 (default: %(default)s)",
    )
    p.add_argument(
        "--quick", action="store_true", help="2 scales, 4 epochs, for a smoke test (default: off)"
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)
    epochs, n_scales = (4, 2) if args.quick else (args.epochs, args.scales)

    np.seterr(over="ignore", invalid="ignore")  # std 1 without batchnorm overflows: expected
    x, t, x_test, t_test = load_mnist(args.data, n_train=1000, n_test=1000)
    steps_per_epoch = len(x) // 100
    scales = np.logspace(0, -4, n_scales)
    fig, axes = plt.subplots(
        1, n_scales, figsize=(3 * n_scales, 3), sharey=True, squeeze=False, layout="constrained"
    )
    results = {}
    for ax, std in zip(axes[0], scales, strict=True):
        for bn in (True, False):
            spec = {"name": "mlp", "hidden": [100] * 5, "init": float(std), "batchnorm": bn}
            net = build(spec, seed=0)
            _, acc, test_acc = train(
                net,
                create("sgd", lr=0.01),
                x,
                t,
                epochs * steps_per_epoch,
                every=steps_per_epoch,
                x_test=x_test,
                t_test=t_test,
                label=f"std {std:.2g} {'batchnorm' if bn else 'plain'}",
            )
            results[(float(std), bn)] = (acc[-1], test_acc[-1])
            ax.plot(
                range(1, epochs + 1), acc, "-" if bn else "--", label="batchnorm" if bn else "plain"
            )
        with_bn, plain = results[(float(std), True)][0], results[(float(std), False)][0]
        print(
            f"init std {std:.2g}: train accuracy with batchnorm {with_bn:.3f}, without {plain:.3f}"
        )
        ax.set(title=f"std {std:.2g}", xlabel="epoch", ylim=(0, 1.02))
    axes[0, 0].set_ylabel("train accuracy")
    axes[0, 0].legend()
    save(fig, args.out, "batchnorm.png")
    return results  # {(init std, batchnorm): (final train accuracy, final test accuracy)}


if __name__ == "__main__":
    main()
