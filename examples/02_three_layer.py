"""The 3-layer network of book chapter 3 (section 3.4.3), with the book's fixed weights,
built from mpinet's own layers: Affine -> Sigmoid -> Affine -> Sigmoid -> Affine -> identity.

Input [1.0, 0.5] gives [0.31682708, 0.69627909], as in the book.

    python examples/02_three_layer.py [--out DIR]
"""

import numpy as np
from common import example_parser, plt, save

from mpinet.model import limit_threads
from mpinet.model.functions import identity_function
from mpinet.model.layers import Affine, Sigmoid

WEIGHTS = {  # the book's init_network()
    "W1": [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]],
    "b1": [0.1, 0.2, 0.3],
    "W2": [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]],
    "b2": [0.1, 0.2],
    "W3": [[0.1, 0.3], [0.2, 0.4]],
    "b3": [0.1, 0.2],
}


def init_network():
    """The layers in order; each Affine gets its weights and (unused) gradient arrays."""
    layers = []
    for i in (1, 2, 3):
        W, b = np.array(WEIGHTS[f"W{i}"]), np.array(WEIGHTS[f"b{i}"])
        layers.append(Affine(W, b, np.zeros_like(W), np.zeros_like(b), name=f"affine{i}"))
        if i < 3:
            layers.append(Sigmoid())
    return layers


def forward(layers, x):
    for layer in layers:
        x = layer.forward(x, train=False)
    return identity_function(x)  # the output layer of a regression: y = a


def main(argv=None):
    p = example_parser(__doc__, "02_three_layer", data=False)
    p.add_argument(
        "--quick",
        action="store_true",
        help="accepted for symmetry with the other examples; this one is already "
        "quick (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)

    layers = init_network()
    y = forward(layers, np.array([[1.0, 0.5]]))[0]
    print(f"input [1.0, 0.5] -> {y}")

    # The two outputs over a grid of inputs: how smooth the fixed network is.
    g = np.linspace(-3, 3, 61)
    x1, x2 = np.meshgrid(g, g)
    grid = forward(layers, np.stack([x1.ravel(), x2.ravel()], axis=1))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), layout="constrained")
    for k, ax in enumerate(axes):
        im = ax.contourf(x1, x2, grid[:, k].reshape(x1.shape), levels=20)
        ax.plot(1.0, 0.5, "r*", ms=12)
        ax.set(title=f"y{k + 1}", xlabel="x1", ylabel="x2")
        fig.colorbar(im, ax=ax)
    save(fig, args.out, "outputs.png")
    return y


if __name__ == "__main__":
    main()
