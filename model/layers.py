"""The book's layers (chapters 5 and 6): forward(x, train=True) / backward(dout) -> dx.

Contracts kept throughout:
- parameters and their gradients are views into a ParamBuffer, injected by the network
  (`Affine(W, b, dW, db)`); backward writes them with `[...] =`, never rebinds them;
- backward never mutates `dout` (the book's Relu does);
- a layer keeps the dtype of its input: a float32 network never computes in float64.
Convolution lives in conv.py (and the network's fast FusedConvolution in fused_conv.py),
Pooling in pooling.py; ToNHWC and Flatten, the two layout layers of the CNNs, are at the end
of this file.
"""

import numpy as np

from .functions import sigmoid, softmax_and_log


class MulLayer:
    """z = x * y (the computation-graph example of chapter 5)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        return dout * self.y, dout * self.x


class AddLayer:
    """z = x + y."""

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout * 1, dout * 1


class Relu:
    def forward(self, x, train=True):
        self.out = np.maximum(x, 0)  # one pass; the book's mask-then-multiply takes two
        return self.out

    def backward(self, dout):
        return dout * (self.out > 0)


class Sigmoid:
    def forward(self, x, train=True):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Tanh:
    def forward(self, x, train=True):
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out * self.out)


class Affine:
    """out = x @ W + b, with W of shape (in, out); x of any shape (N, ...) is flattened."""

    def __init__(self, W, b, dW, db, name="affine", need_dx=True):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.name, self.need_dx = name, need_dx  # need_dx=False: first layer, dx unused
        self.ones = np.ones(0, W.dtype)

    def forward(self, x, train=True):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.W.shape[0]:
            raise ValueError(
                f"Affine '{self.name}': expected input with {self.W.shape[0]} features, "
                f"got array of shape {self.original_x_shape}"
            )
        self.x = x
        out = x @ self.W
        out += self.b  # in place: no second (N, out) temporary
        return out

    def backward(self, dout):
        if self.ones.shape[0] != dout.shape[0]:
            self.ones = np.ones(dout.shape[0], dout.dtype)
        np.matmul(self.x.T, dout, out=self.dW)  # straight into the flat gradient: no copy
        np.matmul(self.ones, dout, out=self.db)  # a GEMV: much faster than dout.sum(axis=0)
        if not self.need_dx:
            return None
        return (dout @ self.W.T).reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax then cross-entropy; t is class indices or one-hot rows.

    forward returns the mean loss over the local batch as a float; backward returns dx
    already divided by the local batch size (so ranks with equal batches can average).
    The loss is computed from log-softmax, exactly, instead of the book's log(y + 1e-7).
    """

    def forward(self, x, t):
        t = np.asarray(t)
        if t.size == x.size:  # one-hot -> indices
            t = t.argmax(axis=1)
        self.t = t
        self.y, log_y = softmax_and_log(x)
        n = x.shape[0]
        return -float(np.sum(log_y[np.arange(n), t])) / n

    def backward(self, dout=1):
        n = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        dx *= dout / n
        return dx


class IdentityWithLoss:
    """Identity output with mean squared error (regression): 0.5 * sum((y - t)**2) / N."""

    def forward(self, x, t):
        self.y, self.t = x, np.asarray(t, dtype=x.dtype).reshape(x.shape)
        return 0.5 * float(np.sum((x - self.t) ** 2)) / x.shape[0]

    def backward(self, dout=1):
        return (self.y - self.t) * (dout / self.y.shape[0])


class Dropout:
    """Inverted dropout: drop with probability `ratio` in training, scale the kept by 1/(1-ratio).

    The book scales by (1 - ratio) at test time instead; both have the same expectation, and
    this way evaluation is a plain forward. The random stream `rng` is injected (per rank).
    """

    def __init__(self, ratio, rng):
        if not 0 <= ratio < 1:
            raise ValueError(f"Dropout: ratio must be in [0, 1), got {ratio}")
        self.ratio, self.rng = ratio, rng

    def forward(self, x, train=True):
        if not train or self.ratio == 0:
            self.scale = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.ratio
        self.scale = keep.astype(x.dtype)
        self.scale *= 1 / (1 - self.ratio)
        return x * self.scale

    def backward(self, dout):
        return dout if self.scale is None else dout * self.scale


class BatchNormalization:
    """Batch normalisation over the last axis: features of (N, D), channels of NHWC maps.

    Training normalises with the batch mean and (biased) variance and updates the running
    statistics with `momentum`; evaluation uses the running statistics. eps is 1e-5 (the
    book writes 10e-7); conv maps are normalised per channel, as current practice does,
    where the book normalises each activation. With `allreduce` (a callable that sums a
    float64 array in place across ranks) the statistics are those of the global batch:
    synchronised BatchNorm, with model/ still free of MPI. `frozen` (train.freeze): training
    too normalises with the running statistics and leaves them as they are.
    """

    frozen = False

    def __init__(
        self,
        gamma,
        beta,
        dgamma,
        dbeta,
        running_mean,
        running_var,
        momentum=0.9,
        eps=1e-5,
        allreduce=None,
    ):
        self.gamma, self.beta, self.dgamma, self.dbeta = gamma, beta, dgamma, dbeta
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps, self.allreduce = momentum, eps, allreduce

    def forward(self, x, train=True):
        self.input_shape = x.shape
        x2, tile = rows(x, self.gamma.shape[0])
        if not train or self.frozen:
            std = np.sqrt(self.running_var + self.eps)
            xn = (x2 - tile(self.running_mean)) / tile(std)
            if train:  # frozen: backward treats the running statistics as constants
                self.xn, self.std = xn, std
            return (tile(self.gamma) * xn + tile(self.beta)).reshape(x.shape)
        mu, var, self.n = self._batch_stats(x2, tile)
        self.xc = x2 - tile(mu)
        self.std = np.sqrt(var + self.eps)
        self.xn = self.xc / tile(self.std)
        m = self.momentum
        self.running_mean[...] = m * self.running_mean + (1 - m) * mu
        self.running_var[...] = m * self.running_var + (1 - m) * var
        return (tile(self.gamma) * self.xn + tile(self.beta)).reshape(x.shape)

    def _batch_stats(self, x2, tile):
        d, n = self.gamma.shape[0], x2.size // self.gamma.shape[0]
        if self.allreduce is None:
            mu = per_channel_sum(x2, d) / x2.dtype.type(n)
            return mu, per_channel_sum((x2 - tile(mu)) ** 2, d) / x2.dtype.type(n), n
        stats = np.empty(2 * d + 1)
        stats[:d] = per_channel_sum(x2, d)
        stats[d : 2 * d] = per_channel_sum(x2.astype(np.float64) ** 2, d)
        stats[-1] = n
        self.allreduce(stats)
        n = stats[-1]
        mu = stats[:d] / n
        var = np.maximum(stats[d : 2 * d] / n - mu * mu, 0)
        return mu.astype(x2.dtype), var.astype(x2.dtype), n

    def backward(self, dout):
        d = self.gamma.shape[0]
        dout, tile = rows(dout, d)
        self.dbeta[...] = per_channel_sum(dout, d)
        self.dgamma[...] = per_channel_sum(self.xn * dout, d)
        dxn = tile(self.gamma) * dout
        if self.frozen:
            return (dxn / tile(self.std)).reshape(self.input_shape)
        sums = np.concatenate([per_channel_sum(dxn, d), per_channel_sum(dxn * self.xn, d)])
        if self.allreduce is not None:
            sums = sums.astype(np.float64)
            self.allreduce(sums)
        mean_dxn = (sums[:d] / self.n).astype(dout.dtype)
        mean_dxn_xn = (sums[d:] / self.n).astype(dout.dtype)
        dx = (dxn - tile(mean_dxn) - self.xn * tile(mean_dxn_xn)) / tile(self.std)
        return dx.reshape(self.input_shape)


def rows(x, d):
    """x (..., d) as one row per sample ((N, H*W*d) for NHWC maps), and tile(v): a channel
    vector repeated along a row. Over (N*H*W, d) numpy's inner loop ran d = 4..64 values."""
    x2 = x.reshape(x.shape[0], -1)
    reps = x2.shape[1] // d
    return x2, (lambda v: np.tile(v, reps)) if reps > 1 else (lambda v: v)


def per_channel_sum(x2, d):
    """The sum over samples and positions of rows(x)'s layout -> one value per channel."""
    total = x2.sum(axis=0)
    return total.reshape(-1, d).sum(axis=0) if total.size > d else total


class ToNHWC:
    """The network's entry for CNNs: (N, C*H*W) or (N, C, H, W) in, NHWC maps out."""

    def __init__(self, input_shape):
        self.input_shape = tuple(input_shape)  # (C, H, W)

    def forward(self, x, train=True):
        C, H, W = self.input_shape
        if x.size // max(x.shape[0], 1) != C * H * W:
            raise ValueError(
                f"expected images of shape {self.input_shape} (or {C * H * W} "
                f"values per sample), got array of shape {x.shape}"
            )
        self.x_shape = x.shape
        return np.ascontiguousarray(x.reshape(-1, C, H, W).transpose(0, 2, 3, 1))

    def backward(self, dout):
        if dout is None:  # the first convolution skipped its input gradient
            return None
        return dout.transpose(0, 3, 1, 2).reshape(self.x_shape)


class Flatten:
    """NHWC maps -> (N, C*H*W) rows in the book's (C, H, W) order, so Affine weights match."""

    def forward(self, x, train=True):
        self.x_shape = x.shape
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)

    def backward(self, dout):
        N, H, W, C = self.x_shape
        return dout.reshape(N, C, H, W).transpose(0, 2, 3, 1)


class GlobalAveragePooling:
    """NHWC maps (N, H, W, C) -> (N, C): each channel's mean over the map (GoogLeNet, ResNet).

    It replaces the big flatten-affine head: the classifier sees one number per channel."""

    def forward(self, x, train=True):
        self.x_shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dout):
        N, H, W, C = self.x_shape
        dx = np.empty(self.x_shape, dout.dtype)
        dx[...] = (dout / (H * W))[:, None, None, :]  # each pixel had weight 1 / (H * W)
        return dx
