"""Gradient check (book section 5.7): backpropagation against the numerical gradient, for every
network mpinet builds, printed as a table of max relative errors per parameter tensor.

Small variants keep it fast (8x8 inputs, a few filters). Three things make the check fair:
float64 (float32 rounding would swamp the central difference); dropout 0 (a fresh random
mask per forward would make f() a different function each call); and noise on the biases,
which start at 0, so that no ReLU or max-pool input sits exactly on its kink, where the
numerical and analytic derivatives legitimately disagree.

One entry is large by construction: with batchnorm, an Affine bias feeds BatchNormalization,
which subtracts the batch mean, so that bias's true gradient is 0 and both methods give
round-off (1e-17 vs 1e-12): a relative error of noise. The absolute error shows it is fine.

    python examples/05_gradient_check.py [--out DIR]
"""

import numpy as np
from common import example_parser, plt, save

from mpinet.model import build, limit_threads
from mpinet.model.gradient import numerical_gradient, relative_error

SMALL = {"input_shape": [1, 8, 8], "dropout": 0.0}
NETWORKS = {
    "mlp (relu)": {"name": "mlp", "hidden": [10, 10], **SMALL},
    "mlp (tanh, batchnorm, weight decay)": {
        "name": "mlp",
        "hidden": [10, 10],
        "activation": "tanh",
        "batchnorm": True,
        "weight_decay": 0.1,
        **SMALL,
    },
    "simple_cnn": {"name": "simple_cnn", "filters": 3, "hidden": 10, "init": 0.3, **SMALL},
    "deep_cnn": {"name": "deep_cnn", "filters": [2, 3, 3, 4, 4, 4], "hidden": 6, **SMALL},
}


def check(spec, seed=0):
    """{tensor name: max relative error between backprop and central-difference gradients}."""
    rng = np.random.default_rng(seed)
    net = build(spec, dtype="float64", seed=seed)
    for name, p in net.params.items():
        if name.endswith(".b"):
            p += 0.1 * rng.standard_normal(p.shape)
    x, t = rng.random((3, 64)), rng.integers(0, 10, 3)
    net.loss(x, t)
    net.backward()
    numeric = numerical_gradient(lambda: net.loss(x, t), net.buffer.data)
    errors = {}
    for name, g in net.grads.items():
        view = net.params[name]  # the same offset in the flat buffer, for both gradients
        offset = (
            view.__array_interface__["data"][0] - net.buffer.data.__array_interface__["data"][0]
        ) // view.itemsize
        num = numeric[offset : offset + g.size].reshape(g.shape)
        errors[name] = (float(relative_error(g, num).max()), float(np.abs(g - num).max()))
    return errors


def main(argv=None):
    p = example_parser(__doc__, "05_gradient_check", data=False)
    p.add_argument(
        "--quick",
        action="store_true",
        help="accepted for symmetry with the other examples; this one is already "
        "quick (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)

    table = {label: check(spec) for label, spec in NETWORKS.items()}
    print(
        f"{'network':38} {'tensors':>7} {'max rel. error':>15} {'max abs. error':>15}  worst tensor"
    )
    summary = {}
    for label, errors in table.items():
        worst = max(errors, key=lambda name: errors[name][0])
        summary[label] = (errors[worst][0], max(abs_err for _, abs_err in errors.values()))
        print(
            f"{label:38} {len(errors):7d} {summary[label][0]:15.2e} {summary[label][1]:15.2e}"
            f"  {worst}"
        )

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, errors in table.items():
        ax.semilogy(range(len(errors)), [rel for rel, _ in errors.values()], "o-", label=label)
    ax.set(
        xlabel="parameter tensor (construction order)",
        ylabel="max relative error",
        title="backprop vs numerical gradient (float64, h = 1e-4)",
    )
    ax.legend(fontsize=7)
    save(fig, args.out, "errors.png")
    return summary  # {network: (max relative error, max absolute error)}


if __name__ == "__main__":
    main()
