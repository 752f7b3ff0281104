"""data.train_limit: a seeded, class-balanced subset of the training split, the same for any
world size in both data orders (data/subsets.py, TrainBatches(limit=))."""

import numpy as np
import pytest

from mpinet.data import TrainBatches
from mpinet.data.subsets import balanced_subset, read_rows


def test_the_subset_takes_the_first_of_each_class_in_the_seeds_permutation():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2, 2, 0])
    chosen = balanced_subset(labels, 6, seed=3)
    order = np.random.default_rng(3).permutation(len(labels))
    expected = [[i for i in order if labels[i] == c][:2] for c in (0, 1, 2)]
    assert chosen.tolist() == sorted(sum(expected, []))
    assert np.bincount(labels[chosen]).tolist() == [2, 2, 2]
    assert balanced_subset(labels, 6, seed=4).tolist() != chosen.tolist()  # the seed decides


@pytest.mark.parametrize(
    "n, message",
    [
        (1005, "data.train_limit 1005: does not divide into the 10 classes"),
        (5, "expected a multiple of 10, e.g. 10"),
        (60000, "data.train_limit 60000: class 5 has only 5421 training samples"),
    ],
)
def test_a_limit_that_cannot_be_balanced_is_one_line(mnist_h5, n, message):
    with pytest.raises(ValueError, match=message) as error:
        _batches(mnist_h5, n, "shard", 0, 1)
    assert "\n" not in str(error.value)


def test_read_rows_is_the_point_selection(rng):
    data = rng.integers(0, 255, (50, 3))
    index = np.sort(rng.choice(50, 7, replace=False))
    np.testing.assert_array_equal(read_rows(data, index), data[index])
    assert read_rows(data, index[:0]).shape == (0, 3)


def _batches(path, limit, order, rank, world_size):
    return TrainBatches(
        path,
        global_batch=100,
        rank=rank,
        world_size=world_size,
        seed=7,
        order=order,
        prefetch=False,
        limit=limit,
    )


@pytest.mark.parametrize("order", ["shard", "global"])
def test_the_subset_is_the_same_for_world_size_1_and_2_and_class_balanced(mnist_h5, order):
    alone = _batches(mnist_h5, 1000, order, 0, 1)
    pair = [_batches(mnist_h5, 1000, order, r, 2) for r in (0, 1)]
    assert np.bincount(alone.labels).tolist() == [100] * 10
    np.testing.assert_array_equal(pair[0].subset, alone.subset)
    if order == "shard":  # each rank holds its half of the subset: together, the same samples
        images = np.concatenate([b.images for b in pair])
        labels = np.concatenate([b.labels for b in pair])
    else:  # each rank holds the whole subset
        images, labels = pair[1].images, pair[1].labels
    np.testing.assert_array_equal(images, alone.images)
    np.testing.assert_array_equal(labels, alone.labels)
    assert alone.steps_per_epoch == 10 and pair[0].steps_per_epoch == 10
    # and the subset's images are the split's at those indices
    import h5py

    with h5py.File(mnist_h5, "r") as f:
        np.testing.assert_array_equal(alone.images[:5], f["train/images"][alone.subset[:5]])


def test_global_order_batches_of_the_subset_are_the_same_on_any_world_size(mnist_h5):
    (x1, t1), *_ = _batches(mnist_h5, 1000, "global", 0, 1).epoch(2)
    halves = [next(iter(_batches(mnist_h5, 1000, "global", r, 2).epoch(2))) for r in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), x1)
    np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), t1)


def test_no_limit_reads_the_whole_split_as_before(mnist_h5):
    batches = _batches(mnist_h5, 0, "shard", 0, 1)
    assert batches.subset is None and len(batches.labels) == 60000
