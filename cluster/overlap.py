"""train.overlap: the gradient's mean in buckets, each started while backward goes on.

Backward runs the layers last to first, and the flat buffer holds them first to last, so the
gradient is final from the end of the buffer backwards. The buffer is cut, at layer starts,
into BUCKETS contiguous slices of about equal size; the hook the network calls after each
layer's backward (its `spans=` recorder, model/network.py) starts a non-blocking allreduce of
the slice that layer completed and Test()s those in flight, so that MPI moves them while the
next layers compute: MPICH progresses a request only inside MPI calls. After the first layer
(the last slice) every slice is waited for and divided by world_size; the network then adds
weight decay, to the mean, never to a buffer MPI is still using.

Every rank cuts the same slices and starts them in the same order. A sum of 2 ranks is the
same in any grouping (a + b), so -n 2 trains bit for bit as without overlap; on 4 ranks the
slices' sums may group the ranks' values another way than the whole buffer's, which moves
the last bits only (the -n 1/2/4 tolerance holds).
"""

BUCKETS = 4


def cut(size, layer_starts, buckets=BUCKETS):
    """The buffer's slices [(start, stop), ...] in backward order (the end first), each
    begun at a layer start, about size / buckets long; and the layer that completes each."""
    starts = sorted(layer_starts, key=lambda pair: pair[1])  # (layer name, first offset)
    cuts, last = [], size
    for k in range(buckets - 1, 0, -1):
        goal = size * k / buckets
        name, start = min(starts, key=lambda pair: abs(pair[1] - goal))
        if 0 < start < last:
            cuts.append((name, start, last))
            last = start
    cuts.append((starts[0][0], 0, last))
    return [(start, stop) for _, start, stop in cuts], [name for name, _, _ in cuts]


class Overlap:
    """One step's bucketed mean: hook(trace) is what backward's `spans=` gets."""

    def __init__(self, comm, grad, layer_starts):
        self.comm, self.grad = comm, grad
        self.slices, names = cut(grad.size, layer_starts)
        self.after = {name: k for k, name in enumerate(names)}  # layer -> the slice it ends
        self.trace, self.pending, self.done = None, [], False

    def hook(self, trace):
        """The recorder for this step's backward: this object, passing spans on to
        `trace` (a --profile recorder, or None)."""
        self.trace, self.pending, self.done = trace, [], False
        return self

    def layer(self, phase, name):
        """After a layer's forward or backward: a profiled span; in backward, the slice it
        completed starts and the ones in flight progress."""
        if self.trace is not None:
            self.trace.layer(phase, name)
        if phase != "backward":
            return
        k = self.after.get(name)
        if k is not None:
            start, stop = self.slices[k]
            self.pending.append(self.comm.start_allreduce_sum_(self.grad[start:stop]))
        self.comm.progress(self.pending)
        if k == len(self.slices) - 1:
            self._finish()

    def _finish(self):
        for handle in self.pending:
            self.comm.finish(handle)
        self.grad /= self.comm.world_size
        self.pending, self.done = [], True
