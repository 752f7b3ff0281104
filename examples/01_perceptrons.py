"""Perceptrons (book chapter 2): AND, NAND and OR with hand-set weights and bias; XOR by
stacking them, because one straight line cannot separate XOR's outputs.

Each gate is an mpinet Affine layer (x @ W + b) followed by the step function.

    python examples/01_perceptrons.py [--out DIR]
"""

import itertools

import numpy as np
from common import example_parser, plt, save

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
    p.add_argument("--quick", action="store_true", help="accepted for symmetry; already quick")
    args = p.parse_args(argv)

    tables = {name: perceptron(*wb)(INPUTS).tolist() for name, wb in GATES.items()}
    tables["XOR"] = xor(INPUTS).tolist()
    print("x1 x2 | " + " ".join(f"{n:>4}" for n in tables))
    for i, (x1, x2) in enumerate(INPUTS.astype(int)):
        print(f" {x1}  {x2} | " + " ".join(f"{tables[n][i]:>4}" for n in tables))

    # The line w.x + b = 0 of each single gate, and XOR's outputs that no line separates.
    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    grid = np.linspace(-0.5, 1.5, 2)
    for ax, name in zip(axes, tables, strict=True):
        out = np.array(tables[name])
        ax.scatter(*INPUTS.T, c=out, cmap="bwr", s=120, edgecolors="k")
        if name in GATES:
            (w1, w2), b = GATES[name]
            ax.plot(grid, -(w1 * grid + b) / w2, "k--")
        ax.set(title=name, xlim=(-0.5, 1.5), ylim=(-0.5, 1.5), xlabel="x1", ylabel="x2")
    save(fig, args.out, "gates.png")
    return tables


if __name__ == "__main__":
    main()
