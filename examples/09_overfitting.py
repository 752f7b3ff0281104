"""Overfitting and regularisation (book sections 6.4.1-6.4.3): a 300-sample training set and
a big net (784-100x6-10, ReLU), trained plain, with weight decay, and with dropout.

Plain, train accuracy reaches ~100 % while test accuracy stalls far below: the net
memorises. Weight decay (lambda 0.1: loss + lambda/2 * sum W^2) and dropout (ratio 0.2,
inverted) both narrow the gap between the curves. SGD lr 0.01, batch 100, as the book.

    python examples/09_overfitting.py [--epochs 200] [--out DIR] [--data H5]
"""

from common import example_parser, load_mnist, plt, save, train

from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create

SETTINGS = {"plain": {}, "weight decay 0.1": {"weight_decay": 0.1}, "dropout 0.2": {"dropout": 0.2}}


def main(argv=None):
    p = example_parser(__doc__, "09_overfitting")
    p.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="epochs over the 300 training samples (default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="20 epochs, 500 test samples, for a smoke test (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)
    epochs, n_test = (20, 500) if args.quick else (args.epochs, 2000)

    x, t, x_test, t_test = load_mnist(args.data, n_train=300, n_test=n_test)
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(12, 3.5), sharey=True, layout="constrained")
    results = {}
    for ax, (label, extra) in zip(axes, SETTINGS.items(), strict=True):
        net = build({"name": "mlp", "hidden": [100] * 6, **extra}, seed=0)
        _, acc, test_acc = train(
            net,
            create("sgd", lr=0.01),
            x,
            t,
            epochs * 3,
            every=3,
            x_test=x_test,
            t_test=t_test,
            label=label,
        )
        results[label] = (acc[-1], test_acc[-1])
        print(
            f"{label:17s} train accuracy {acc[-1]:.3f}, test {test_acc[-1]:.3f}, "
            f"gap {acc[-1] - test_acc[-1]:.3f}"
        )
        ax.plot(range(1, epochs + 1), acc, label="train (300 samples)")
        ax.plot(range(1, epochs + 1), test_acc, label=f"test ({n_test} samples)")
        ax.set(title=label, xlabel="epoch", ylim=(0, 1.02))
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    save(fig, args.out, "overfitting.png")
    return results  # {setting: (final train accuracy, final test accuracy)}


if __name__ == "__main__":
    main()
