"""CNN filters (book section 7.6.1): the 30 first-layer 5x5 filters of SimpleConvNet as
images, before training (random noise, std 0.01) and after (strokes and edge detectors:
blobs of one sign next to blobs of the other).

    python examples/11_cnn_filters.py [--steps 600] [--out DIR] [--data H5]
"""

from common import example_parser, load_mnist, plt, save, train

from mpinet.model import build, limit_threads
from mpinet.model.optimizers import create


def show(filters, title, out, name):
    """One grayscale image per filter, each scaled to its own range (as the book's plot)."""
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
    for ax, w in zip(axes.ravel(), filters, strict=True):
        ax.imshow(w[0], cmap="gray_r", interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, out, name)


def main(argv=None):
    p = example_parser(__doc__, "11_cnn_filters")
    p.add_argument(
        "--steps", type=int, default=600, help="Adam steps of batch 100 (default: %(default)s)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="30 steps on 1000 samples, for a smoke test (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)
    steps, n_train = (30, 1000) if args.quick else (args.steps, 60000)

    x, t, x_test, t_test = load_mnist(args.data, n_train=n_train, n_test=1000, flat=False)
    net = build({"name": "simple_cnn"}, seed=0)
    before = net.params["conv1.W"].copy()  # (30, 1, 5, 5); a copy: training changes the view
    show(before, "conv1 filters before training", args.out, "filters_before.png")
    train(net, create("adam", lr=1e-3), x, t, steps, label="simple_cnn")
    after = net.params["conv1.W"]
    acc = net.accuracy(x_test, t_test)
    show(
        after,
        f"after {steps} steps (test accuracy {acc:.3f} on 1000 images)",
        args.out,
        "filters_after.png",
    )
    change = float(abs(after - before).mean() / abs(before).mean())
    print(f"test accuracy {acc:.4f}; mean |change| of the filters {change:.2f}x their mean |value|")
    return {"accuracy": acc, "change": change}


if __name__ == "__main__":
    main()
