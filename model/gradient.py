"""Numerical gradient by central difference (book chapter 4), for gradient checks.

h = 1e-4, not 1e-50: at 1e-50, x + h == x in floating point and the difference is 0.
The central difference (f(x+h) - f(x-h)) / 2h has error O(h**2), the forward one O(h).
"""

import numpy as np


def numerical_gradient(f, x, h=1e-4):
    """d f() / d x, perturbing x IN PLACE one element at a time (x may be a buffer view)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        saved = x[idx].copy()
        x[idx] = saved + h
        fxh1 = f()
        x[idx] = saved - h
        fxh2 = f()
        x[idx] = saved
        grad[idx] = (fxh1 - fxh2) / (2 * h)
    return grad


def relative_error(a, b):
    """Elementwise |a - b| / max(|a|, |b|, 1e-8): scale-free, as gradient checks report it."""
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8)
