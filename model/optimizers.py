"""The book's optimizers (chapter 6), each updating ONE flat parameter array in place.

Every rule here is elementwise, so running it on the whole flat buffer is exactly the same
as running it tensor by tensor (a test proves it), and costs a few vectorised statements.
Contract: `update(data, grad)` with two 1-D arrays of equal length; state is allocated
lazily on the first call; `state_dict()` / `load_state_dict()` expose it as flat arrays
plus the step counter `iter`, for checkpoints. `lr` may be changed between steps
(learning-rate schedules set it). `frozen` (create(..., frozen=ranges)): (start, stop)
ranges of the flat buffer that no update moves (train.freeze).
"""

import math

import numpy as np

# The decaying state of a parameter whose gradient stays exactly zero (a dead ReLU, an
# always-blank border pixel) sinks into the denormal range, where x86 arithmetic is many
# times slower (deep_cnn's Adam update after 15 epochs: 1.27 ms, 0.58 ms flushed). Every
# FLUSH_EVERY updates such values become 0: below float32's 1.2e-38, they would move a
# parameter by less than 1e-33.
FLUSH_EVERY = 100


def _positive(cls, **values):
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{cls}: {key} must be > 0, got {value}")


def _fraction(cls, **values):
    for key, value in values.items():
        if not 0 <= value < 1:
            raise ValueError(f"{cls}: {key} must be in [0, 1), got {value}")


class Optimizer:
    """What every optimizer shares: update(), and the frozen ranges of the flat buffer.

    update(data, grad) runs the class's rule (_update) in place. With frozen (start, stop)
    ranges it zeroes their gradient first, so their state stays exactly 0 (each rule maps a
    zero gradient and zero state to zero), and puts their values back afterwards, bit for
    bit (a rule's `data += 0` would turn a -0.0 into +0.0).
    """

    frozen = ()

    def update(self, data, grad):
        if not self.frozen:
            self._update(data, grad)
            return
        for start, stop in self.frozen:
            grad[start:stop] = 0
        kept = [data[start:stop].copy() for start, stop in self.frozen]
        self._update(data, grad)
        for (start, stop), values in zip(self.frozen, kept, strict=True):
            data[start:stop] = values


class SGD(Optimizer):
    """p -= lr * g"""

    def __init__(self, lr=0.01):
        _positive("SGD", lr=lr)
        self.lr, self.iter = lr, 0

    def _update(self, data, grad):
        self.iter += 1
        step = _scratch(self, "_step", data)
        np.multiply(grad, self.lr, out=step)  # into a kept array: no temporary per step
        data -= step

    def state_dict(self):
        return {"iter": self.iter}

    def load_state_dict(self, state):
        self.iter = int(state["iter"])


class Momentum(Optimizer):
    """v = momentum * v - lr * g;  p += v"""

    def __init__(self, lr=0.01, momentum=0.9):
        _positive("Momentum", lr=lr)
        _fraction("Momentum", momentum=momentum)
        self.lr, self.momentum, self.iter, self.v = lr, momentum, 0, None

    def _update(self, data, grad):
        if self.v is None:
            self.v = np.zeros_like(data)
        self.iter += 1
        self.v *= self.momentum
        self.v -= self.lr * grad
        data += self.v
        _flush_denormals(self, self.v)

    def state_dict(self):
        return {"iter": self.iter, "v": self.v}

    def load_state_dict(self, state):
        self.iter, self.v = int(state["iter"]), _copy(state["v"])


class Nesterov(Optimizer):
    """The book's Nesterov form: v = m*v - lr*g;  p += m*m*v - (1 + m)*lr*g"""

    def __init__(self, lr=0.01, momentum=0.9):
        _positive("Nesterov", lr=lr)
        _fraction("Nesterov", momentum=momentum)
        self.lr, self.momentum, self.iter, self.v = lr, momentum, 0, None

    def _update(self, data, grad):
        if self.v is None:
            self.v = np.zeros_like(data)
        self.iter += 1
        m = self.momentum
        self.v *= m
        self.v -= self.lr * grad
        data += m * m * self.v
        data -= (1 + m) * self.lr * grad
        _flush_denormals(self, self.v)

    state_dict = Momentum.state_dict
    load_state_dict = Momentum.load_state_dict


class AdaGrad(Optimizer):
    """h += g*g;  p -= lr * g / (sqrt(h) + 1e-7)"""

    def __init__(self, lr=0.01, eps=1e-7):
        _positive("AdaGrad", lr=lr, eps=eps)
        self.lr, self.eps, self.iter, self.h = lr, eps, 0, None

    def _update(self, data, grad):
        if self.h is None:
            self.h = np.zeros_like(data)
        self.iter += 1
        self.h += grad * grad
        data -= self.lr * grad / (np.sqrt(self.h) + self.eps)

    def state_dict(self):
        return {"iter": self.iter, "h": self.h}

    def load_state_dict(self, state):
        self.iter, self.h = int(state["iter"]), _copy(state["h"])


class RMSprop(Optimizer):
    """h = decay*h + (1 - decay)*g*g;  p -= lr * g / (sqrt(h) + 1e-7)"""

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7):
        _positive("RMSprop", lr=lr, eps=eps)
        _fraction("RMSprop", decay_rate=decay_rate)
        self.lr, self.decay_rate, self.eps, self.iter, self.h = lr, decay_rate, eps, 0, None

    def _update(self, data, grad):
        if self.h is None:
            self.h = np.zeros_like(data)
        self.iter += 1
        self.h *= self.decay_rate
        self.h += (1 - self.decay_rate) * grad * grad
        data -= self.lr * grad / (np.sqrt(self.h) + self.eps)
        _flush_denormals(self, self.h)

    state_dict = AdaGrad.state_dict
    load_state_dict = AdaGrad.load_state_dict


class Adam(Optimizer):
    """m += (1-b1)(g - m);  v += (1-b2)(g*g - v);  p -= lr_t * m / (sqrt(v) + 1e-7)

    As in the book, the bias correction is folded into the step size:
    lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t). (The paper corrects m and v instead and adds
    eps to the corrected sqrt(v); the two differ only in where eps enters.)
    """

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        _positive("Adam", lr=lr, eps=eps)
        _fraction("Adam", beta1=beta1, beta2=beta2)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.iter, self.m, self.v = 0, None, None

    def _update(self, data, grad):
        if self.m is None:
            self.m, self.v = np.zeros_like(data), np.zeros_like(data)
        self.iter += 1
        # a Python float: a 0-d float64 would promote the whole step below to float64
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        # The same statements as the docstring, written with out= into two kept arrays.
        t1, t2 = _scratch(self, "_t1", data), _scratch(self, "_t2", data)
        np.subtract(grad, self.m, out=t1)
        t1 *= 1 - self.beta1
        self.m += t1
        np.multiply(grad, grad, out=t1)
        t1 -= self.v
        t1 *= 1 - self.beta2
        self.v += t1
        np.multiply(self.m, lr_t, out=t1)
        np.sqrt(self.v, out=t2)
        t2 += self.eps
        t1 /= t2
        data -= t1
        _flush_denormals(self, self.m, self.v)

    def state_dict(self):
        return {"iter": self.iter, "m": self.m, "v": self.v}

    def load_state_dict(self, state):
        self.iter = int(state["iter"])
        self.m, self.v = _copy(state["m"]), _copy(state["v"])


def _flush_denormals(opt, *states):
    """Every FLUSH_EVERY updates, set the denormal entries of the states to 0 (see top)."""
    if opt.iter % FLUSH_EVERY == 0:
        for a in states:
            np.putmask(a, np.abs(a) < np.finfo(a.dtype).tiny, 0)


def _scratch(opt, name, like):
    """A work array kept on the optimizer (not state: never saved), same shape as `like`."""
    a = getattr(opt, name, None)
    if a is None or a.shape != like.shape or a.dtype != like.dtype:
        a = np.empty_like(like)
        setattr(opt, name, a)
    return a


def _copy(a):
    return None if a is None else np.array(a, copy=True)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def create(name, frozen=(), **kwargs):
    """create('adam', lr=1e-3) -> Adam; unknown names and arguments are one-line errors.

    frozen: (start, stop) ranges of the flat buffer that update() leaves as they are, their
    state at 0 (ParamBuffer.ranges(names) makes them).
    """
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {sorted(OPTIMIZERS)}")
    try:
        optimizer = cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"optimizer {name!r}: {e}") from None
    optimizer.frozen = tuple((int(start), int(stop)) for start, stop in frozen)
    return optimizer
