"""Tolerances from the arithmetic, not from one machine's rounding.

Two runs that compute the same sums in another order (another BLAS kernel, another batch
shape, another world size) may round differently. Higham's bound (Accuracy and Stability of
Numerical Algorithms, 2nd ed., 3.1 and 4.2): a sum or dot product of n terms, in ANY order,
is within gamma(n) * sum(|terms|) of the exact value, where gamma(n) = n*u / (1 - n*u) and u
is the unit roundoff (eps / 2). Two orders therefore differ by at most twice that.

    u(float32) = 6.0e-8     u(float64) = 1.1e-16
"""

import numpy as np


def unit_roundoff(dtype):
    return float(np.finfo(dtype).eps) / 2


def gamma(n, dtype):
    """Higham's gamma_n: the relative error bound of any n-term sum or dot product."""
    nu = n * unit_roundoff(dtype)
    assert nu < 1, f"gamma({n}) is unbounded in {np.dtype(dtype)}"
    return nu / (1 - nu)


def affine_relu_logit_bound(layers, x, dtype, rounding=None):
    """|logits(order A) - logits(order B)|, elementwise, for x -> [affine -> relu]* -> affine.

    layers: [(W, b), ...] as float64 arrays. First-order propagation of gamma bounds: each
    affine's output is within gamma(K + 1) * (|x| @ |W| + |b|) of exact (K inputs and the
    bias), ReLU does not enlarge an error (1-Lipschitz), and an error in an affine's input
    passes through |W|. Twice the one-sided bound: both runs may err, in opposite directions.
    rounding: a relative error per term instead of gamma(K + 1) (e.g. u(float16) when only
    the weights were rounded once, to 16 bits).
    """
    h = np.asarray(x, np.float64)
    err = np.zeros_like(h)
    for i, (W, b) in enumerate(layers):
        magnitude = np.abs(h) @ np.abs(W) + np.abs(b)
        each = gamma(W.shape[0] + 1, dtype) if rounding is None else rounding
        err = each * magnitude + err @ np.abs(W)
        h = h @ W + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return 2 * err


def mean_loss_bound(logit_bound):
    """|mean loss(A) - mean loss(B)| from per-sample logit bounds (n, classes).

    The softmax cross-entropy of one sample, logsumexp(y) - y[t], moves by at most
    2 * max_j |dy_j| (logsumexp and y[t] are each 1-Lipschitz in the max-norm); the mean
    moves by at most the mean of those.
    """
    return float(np.mean(2 * logit_bound.max(axis=1)))


# Training runs that should follow the same trajectory (another world size, micro-batches,
# synchronised BatchNorm, a resume on another world size) are compared in float64. Per step
# every quantity is a sum of at most K = 784 products (the widest dot product of the test
# nets) or B <= 100 samples, reordered: a relative perturbation of at most 2 * gamma(784)
# = 1.7e-13 of its magnitude. The perturbations of T steps add up (T * 1.7e-13), and the
# training map may amplify them: Adam divides by sqrt(v), a gradient sum may cancel. The
# tolerance allows a factor AMPLIFICATION for that. In float32 the same bound would be
# 5e8 times larger (1e-3 at 12 steps): as large as the effect of a wrong data order, which
# is why these equivalences are tested in float64 and the float32 default is not compared
# across world sizes except bitwise where the operations are the same.
AMPLIFICATION = 1000


def trajectory_tolerance(steps, dtype=np.float64, terms=784):
    """Max relative parameter difference allowed between two reorderings of a training run."""
    return AMPLIFICATION * steps * 2 * gamma(terms, dtype)


def sum_bound(n, max_term, dtype):
    """|sum(order A) - sum(order B)| for n terms each at most max_term in magnitude."""
    return 2 * gamma(n, dtype) * n * max_term


def ambiguous_samples(logits, logit_bound):
    """Samples whose predicted label another rounding of their logits may change: those
    whose two largest logits are within twice the largest logit bound of each other."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return int(np.sum(top2[:, 1] - top2[:, 0] <= 2 * logit_bound.max(axis=1)))
