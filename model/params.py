"""ParamBuffer: every trainable number of a network in ONE flat array, gradients in another.

Each parameter is a named, reshaped view into `data` (and its gradient a view into `grad`),
in construction order. So the gradient exchange is one Allreduce of `grad`, an optimizer
step is a few vectorised statements on `data`, and a broadcast of the weights is one Bcast.
Rule: views are written in place (`[...] =`, `-=`), never rebound, or they detach.
"""

import hashlib

import numpy as np


class ParamBuffer:
    """Named views into one contiguous `data` array (and `grad`, unless with_grad=False).

    specs: ordered (name, shape) pairs, e.g. [("affine1.W", (784, 100)), ("affine1.b", (100,))].
    The second use, with_grad=False, holds state that is not trained (BatchNorm running
    mean/var), so it too can be averaged across ranks or checkpointed in one piece.
    """

    def __init__(self, specs, dtype="float32", with_grad=True):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"ParamBuffer: dtype must be float32 or float64, got {self.dtype}")
        names = [name for name, _ in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"ParamBuffer: duplicate parameter names in {names}")
        self.specs = [(name, tuple(int(d) for d in shape)) for name, shape in specs]
        self.size = sum(int(np.prod(shape)) for _, shape in self.specs)
        self.data = np.zeros(self.size, self.dtype)
        self.grad = np.zeros(self.size, self.dtype) if with_grad else None
        self.params = self._views(self.data)
        self.grads = self._views(self.grad) if with_grad else {}

    def _views(self, flat):
        views, offset = {}, 0
        for name, shape in self.specs:
            n = int(np.prod(shape))
            views[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        return views

    def offsets(self):
        """name -> (start, stop) in the flat arrays."""
        out, offset = {}, 0
        for name, shape in self.specs:
            n = int(np.prod(shape))
            out[name] = (offset, offset + n)
            offset += n
        return out

    def ranges(self, names):
        """The (start, stop) ranges of the flat arrays that the parameters `names` occupy,
        in buffer order, neighbours merged (conv1.W and conv1.b: one range)."""
        out = []
        for name, (start, stop) in self.offsets().items():
            if name not in names:
                continue
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], stop)
            else:
                out.append((start, stop))
        return out

    def layout(self):
        """(name, shape, dtype) per parameter: compared across ranks before training."""
        return tuple((name, shape, self.dtype.str) for name, shape in self.specs)

    def checksum(self):
        """sha256 of the parameter bytes: equal on every rank when the replicas agree."""
        return hashlib.sha256(self.data.tobytes()).hexdigest()

    def shares_memory(self):
        """True when every named view still aliases the flat buffers (nothing was rebound)."""
        ok = all(np.shares_memory(v, self.data) for v in self.params.values())
        if self.grad is not None:
            ok = ok and all(np.shares_memory(g, self.grad) for g in self.grads.values())
        return ok
