"""train.overlap's buckets (cluster/overlap.py): where the buffer is cut, and that each
bucket's allreduce starts right after the layer that completes it, while backward goes on."""

import numpy as np
import pytest

from mpinet.cluster.overlap import Overlap, cut
from mpinet.model import build


@pytest.mark.parametrize("name", ["mlp", "simple_cnn", "deep_cnn", "vgg", "googlenet", "resnet"])
def test_the_buckets_tile_the_buffer_from_its_end_at_layer_starts(name):
    net = build({"name": name})
    starts = net.layer_starts()
    slices, names = cut(net.buffer.size, starts)
    assert slices[0][1] == net.buffer.size and slices[-1][0] == 0
    for (start, _), (_, stop) in zip(slices, slices[1:], strict=False):
        assert stop == start  # contiguous, the end of the buffer first
    assert 2 <= len(slices) <= 4
    offsets = dict(starts)
    assert [offsets[n] for n in names] == [start for start, _ in slices]  # each starts a layer
    assert all(n in net.layers for n in names)


class FakeComm:
    """Comm's split allreduce, logged; the sum of 2 equal ranks is the part doubled."""

    world_size = 2

    def __init__(self, log):
        self.log = log

    def start_allreduce_sum_(self, part):
        self.log.append(("start", part.size))
        part *= 2
        return part

    def progress(self, handles):
        self.log.extend(("test", part.size) for part in handles)

    def finish(self, part):
        self.log.append(("wait", part.size))


def test_each_bucket_starts_after_its_layer_and_the_mean_is_whole_before_decay():
    net = build({"name": "simple_cnn"})
    log = []
    overlap = Overlap(FakeComm(log), net.buffer.grad, net.layer_starts())
    x = np.random.default_rng(0).random((4, 784), np.float32)
    net.loss(x, np.arange(4))
    hook = overlap.hook(None)
    real_layer = hook.layer

    def layer(phase, name):
        log.append(("layer", name))
        real_layer(phase, name)

    hook.layer = layer
    net.backward(spans=hook)
    got = net.buffer.grad.copy()
    net.loss(x, np.arange(4))  # the same batch, without overlap
    net.backward()
    np.testing.assert_array_equal(got, net.buffer.grad)  # 2 equal "ranks": the mean is it
    assert overlap.done and [e for e in log if e[0] == "start"] == [
        ("start", stop - start) for start, stop in overlap.slices
    ]
    first = log.index(("layer", "affine2"))  # the last layer: its bucket starts at once
    assert log[first + 1] == ("start", overlap.slices[0][1] - overlap.slices[0][0])
    assert log.index(("start", overlap.slices[1][1] - overlap.slices[1][0])) < log.index(
        ("layer", "conv1")
    )  # the middle bucket is in flight while conv1's backward runs
    assert net.buffer.grad.size == sum(stop - start for start, stop in overlap.slices)
