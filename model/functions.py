"""Activation and loss functions (book chapters 3 and 4), batch-aware and dtype-preserving."""

import numpy as np


def identity_function(x):
    return x


def step_function(x):
    return (x > 0).astype(np.int64)


def sigmoid(x):
    # Split by sign so exp never overflows: for x < 0 use exp(x) / (1 + exp(x)).
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1 + ex)
    return out


def sigmoid_grad(x):
    y = sigmoid(x)
    return (1 - y) * y


def relu(x):
    return np.maximum(x, 0)


def relu_grad(x):
    return (x > 0).astype(x.dtype)


def softmax(x):
    """Softmax over the last axis; subtracting the row max keeps exp from overflowing."""
    y, _ = softmax_and_log(x)
    return y


def softmax_and_log(x):
    """(softmax(x), log(softmax(x))) over the last axis, from one exp: mpinet's one softmax.

    The log is computed as x - max - log(sum of exp), exact even where a probability
    underflows to 0 and log(y) would be -inf (the book adds 1e-7 instead).
    """
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    z = e.sum(axis=-1, keepdims=True)
    return e / z, shifted - np.log(z)


def mean_squared_error(y, t):
    """0.5 * sum of squares, averaged over the batch (the book sums one sample; we average)."""
    y, t = np.atleast_2d(y), np.atleast_2d(t)
    return 0.5 * float(np.sum((y - t) ** 2)) / y.shape[0]


def cross_entropy_error(y, t):
    """Mean cross-entropy of probabilities y against labels t (indices or one-hot)."""
    t = np.asarray(t)
    if y.ndim == 1:  # one sample
        y = y.reshape(1, -1)
        t = t.reshape(1, -1) if t.size == y.size else t.reshape(1)
    if t.size == y.size:  # one-hot -> indices
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    # 1e-7 keeps log away from -inf when a probability underflows to 0 (the book's delta).
    return -float(np.sum(np.log(y[np.arange(batch_size), t] + 1e-7))) / batch_size
