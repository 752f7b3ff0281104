"""Perceptrons (book chapter 2): AND, NAND and OR with hand-set weights and bias; XOR by
stacking them, because one straight line cannot separate XOR's outputs.

Each gate is an mpinet Affine layer (x @ W + b) followed by the step function.

    python examples/01_perceptrons.py [--out DIR]    # truth tables, and gates.png
"""

import itertools

import numpy as np
from common import example_parser, plt, save

from mpinet.model import limit_threads
from mpinet.model.functions import step_function
from mpinet.model.layers import Affine

# The book's hand-set weights and biases (section 2.3.3).
GATES = {"AND": ([0.5, 0.5], -0.7), "NAND": ([-0.5, -0.5], 0.7), "OR": ([0.5, 0.5], -0.2)}
INPUTS = np.array(list(itertools.product([0, 1], repeat=2)), dtype=float)


def perceptron(w, b):
    """A gate: step(x @ W + b). The gradient arrays are unused (nothing is learnt here)."""
    W, bias = np.array(w, float).reshape(2, 1), np.array([b], float)
    layer = Affine(W, bias, np.zeros_like(W), np.zeros_like(bias))
    return lambda x: step_function(layer.forward(np.atleast_2d(x)))[:, 0].astype(int)


def xor(x):
    """XOR = AND(NAND(x), OR(x)): a two-layer perceptron (section 2.5.2)."""
    gates = {name: perceptron(*wb) for name, wb in GATES.items()}
    hidden = np.stack([gates["NAND"](x), gates["OR"](x)], axis=1)
    return gates["AND"](hidden)


def main(argv=None):
    p = example_parser(__doc__, "01_perceptrons", data=False)
    p.add_argument(
        "--quick",
        action="store_true",
        help="accepted for symmetry with the other examples; this one is already "
        "quick (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)

    tables = {name: perceptron(*wb)(INPUTS).tolist() for name, wb in GATES.items()}
    tables["XOR"] = xor(INPUTS).tolist()
    print("x1 x2 | " + " ".join(f"{n:>4}" for n in tables))
    for i, (x1, x2) in enumerate(INPUTS.astype(int)):
        print(f" {x1}  {x2} | " + " ".join(f"{tables[n][i]:>4}" for n in tables))
    save(figure(tables), args.out, "gates.png")
    return tables


def figure(tables):
    """One panel per gate: its four outputs, and the region where it outputs 1 (shaded),
    found by evaluating the gate on a grid. A single gate's region is a half-plane bounded
    by the line w.x + b = 0 (dashed); XOR's is a band no single line can cut out."""
    g = np.linspace(-0.5, 1.5, 201)
    x1, x2 = np.meshgrid(g, g)
    grid = np.stack([x1.ravel(), x2.ravel()], axis=1)
    gates = {name: perceptron(*wb) for name, wb in GATES.items()}
    gates["XOR"] = xor
    fig, axes = plt.subplots(1, 4, figsize=(12, 4), layout="constrained", sharex=True, sharey=True)
    for ax, (name, gate) in zip(axes, gates.items(), strict=True):
        ones = gate(grid).reshape(x1.shape)
        ax.contourf(x1, x2, ones, levels=[-0.5, 0.5, 1.5], colors=["#dce4f7", "#f7d9d9"])
        ax.contour(x1, x2, ones, levels=[0.5], colors="k", linestyles="--", linewidths=1)
        ax.scatter(
            *INPUTS.T, c=tables[name], cmap="bwr", vmin=0, vmax=1, s=120, edgecolors="k", zorder=3
        )
        title = "XOR = AND(NAND, OR)" if name == "XOR" else name
        ax.set(
            title=title,
            xlim=(-0.5, 1.5),
            ylim=(-0.5, 1.5),
            xlabel="x1",
            aspect="equal",
            xticks=[0, 1],
            yticks=[0, 1],
        )
    axes[0].set_ylabel("x2")
    fig.suptitle("output 1: red points, shaded red; output 0: blue (dashed: the boundary)")
    return fig


if __name__ == "__main__":
    main()
