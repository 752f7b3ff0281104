"""Numerical differentiation (book chapter 4): forward vs central difference, across h.

f(x) = 0.01 x^2 + 0.1 x at x = 5, where f'(5) = 0.2 exactly. Two errors compete:
- truncation: the forward difference (f(x+h) - f(x)) / h is off by O(h), the central one
  (f(x+h) - f(x-h)) / 2h by O(h^2) (here exactly 0: f is a quadratic);
- rounding: f is only known to ~1e-16 relative, so dividing by a tiny h magnifies it.
At h = 1e-50, 5 + 1e-50 == 5 in float64, the difference is 0 and so is the "derivative":
the notes' pitfall. h = 1e-4 (the book's choice, and mpinet's) sits near the sweet spot.

    python examples/04_numerical_diff.py [--out DIR]
"""

import numpy as np
from common import example_parser, plt, save

from mpinet.model import limit_threads
from mpinet.model.gradient import numerical_gradient


def f(x):
    return 0.01 * x**2 + 0.1 * x


def forward_diff(x, h):
    return (f(x + h) - f(x)) / h


def central_diff(x, h):
    """mpinet's numerical_gradient: it perturbs an array in place, one element at a time."""
    xs = np.array([x])
    return numerical_gradient(lambda: f(xs[0]), xs, h)[0]


def main(argv=None):
    p = example_parser(__doc__, "04_numerical_diff", data=False)
    p.add_argument(
        "--quick",
        action="store_true",
        help="accepted for symmetry with the other examples; this one is already "
        "quick (default: off)",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads, default=1)

    x, exact = 5.0, 0.2
    hs = np.logspace(-1, -16, 61)
    fwd = np.array([abs(forward_diff(x, h) - exact) for h in hs])
    cen = np.array([abs(central_diff(x, h) - exact) for h in hs])
    errors = {
        h: (abs(forward_diff(x, h) - exact), abs(central_diff(x, h) - exact))
        for h in (1e-2, 1e-4, 1e-8, 1e-12, 1e-50)
    }
    print(f"f'(5) = {exact}; 5 + 1e-50 == 5 is {x + 1e-50 == x}")
    print("       h   forward error   central error")
    for h, (ef, ec) in errors.items():
        print(f"{h:8.0e}   {ef:13.2e}   {ec:13.2e}")

    fig, ax = plt.subplots(figsize=(6, 4))
    tiny = 1e-18  # the central error is exactly 0 for some h: keep it on a log axis
    ax.loglog(hs, fwd + tiny, "o-", ms=3, label="forward (f(x+h) - f(x)) / h")
    ax.loglog(hs, cen + tiny, "s-", ms=3, label="central (f(x+h) - f(x-h)) / 2h")
    ax.axvline(1e-4, color="gray", ls="--", label="h = 1e-4")
    ax.invert_xaxis()
    ax.set(
        xlabel="h",
        ylabel="|error| of f'(5)",
        title="at h = 1e-50 the error is 0.2 (100 %): x + h == x",
    )
    ax.legend(fontsize=8)
    save(fig, args.out, "errors.png")
    return errors


if __name__ == "__main__":
    main()
