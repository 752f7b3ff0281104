"""TrainBatches and eval_share: sizes, orders, determinism, dtypes, resuming, prefetch."""

import h5py
import numpy as np
import pytest

from mpinet.data import TrainBatches, eval_share, read_idx
from mpinet.data import batches as batches_module

AUGMENT = {"shift": 2, "rotate": 10.0}


def _batches(path, **kw):
    options = {"global_batch": 40, "rank": 0, "world_size": 1, "seed": 3} | kw
    return TrainBatches(path, **options)


def _epoch(path, epoch=0, **kw):
    return list(_batches(path, **kw).epoch(epoch))


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ta), (xb, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)


# --- sizes and contents ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["shard", "global"])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_rank_runs_the_same_number_of_steps(make_h5, order, world_size):
    path = make_h5(n_train=1003)
    global_batch = 12 * world_size
    steps = set()
    for rank in range(world_size):
        tb = _batches(
            path, global_batch=global_batch, rank=rank, world_size=world_size, order=order
        )
        steps.add(tb.steps_per_epoch)
        assert len(list(tb.epoch(0))) == tb.steps_per_epoch
        assert tb.local_batch == 12
        assert tb.samples_per_rank == (1003 // world_size if order == "shard" else 1003)
    expected = 1003 // world_size // 12 if order == "shard" else 1003 // global_batch
    assert steps == {expected}


@pytest.mark.parametrize("shape, tail", [("flat", (784,)), ("image", (1, 28, 28))])
@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32])
def test_batches_have_the_requested_shape_and_dtype(make_h5, shape, tail, dtype):
    for x, t in _epoch(make_h5(), shape=shape, dtype=dtype):
        assert x.shape == (40,) + tail
        assert x.dtype == np.dtype(dtype)
        assert t.shape == (40,) and t.dtype == np.int64
        assert 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("order", ["shard", "global"])
def test_batches_hold_the_file_content_scaled_to_unit(make_h5, ids, order):
    path = make_h5()
    with h5py.File(path, "r") as f:
        images, labels = f["train/images"][:], f["train/labels"][:]
    for x, t in _epoch(path, order=order, world_size=2, rank=1):
        i = ids(x)
        np.testing.assert_array_equal(x, (images[i] / np.float32(255)).reshape(len(i), -1))
        np.testing.assert_array_equal(t, labels[i])


def test_shard_order_reads_only_this_ranks_shard_once_per_epoch(make_h5, ids):
    path = make_h5(n_train=1000)
    seen = []
    for rank in range(4):
        mine = np.concatenate([ids(x) for x, _ in _epoch(path, world_size=4, rank=rank)])
        assert len(set(mine)) == len(mine)  # no sample twice in an epoch
        assert set(mine) <= set(range(rank * 250, (rank + 1) * 250))
        seen.append(set(mine))
    assert not set.intersection(*seen)


@pytest.mark.parametrize("augment", [None, AUGMENT])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_global_order_gives_the_same_global_batches_for_any_world_size(
    make_h5, world_size, augment
):
    path = make_h5(n_train=1000)
    single = _epoch(path, 1, order="global", augment=augment)
    per_rank = [
        _epoch(path, 1, order="global", augment=augment, world_size=world_size, rank=rank)
        for rank in range(world_size)
    ]
    assert len(single) == 25
    for step, (x, t) in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([r[step][0] for r in per_rank]), x)
        np.testing.assert_array_equal(np.concatenate([r[step][1] for r in per_rank]), t)


# --- determinism and resuming ----------------------------------------------------------------


@pytest.mark.parametrize("order", ["shard", "global"])
def test_batches_are_deterministic_per_seed_epoch_and_rank(make_h5, ids, order):
    path = make_h5()
    kw = {"order": order, "world_size": 2}
    _same(_epoch(path, 4, rank=1, **kw), _epoch(path, 4, rank=1, **kw))
    first = ids(_epoch(path, 4, rank=1, **kw)[0][0])
    assert not np.array_equal(first, ids(_epoch(path, 5, rank=1, **kw)[0][0]))
    assert not np.array_equal(first, ids(_epoch(path, 4, rank=0, **kw)[0][0]))
    assert not np.array_equal(first, ids(_epoch(path, 4, rank=1, seed=4, **kw)[0][0]))


def test_shard_order_follows_the_documented_seeding(mnist_h5, shared_data):
    tb = TrainBatches(mnist_h5, global_batch=100, rank=1, world_size=2, seed=7, prefetch=False)
    x, t = next(tb.epoch(3))
    index = 30000 + np.random.default_rng((7, 3, 1)).permutation(30000)[:50]
    images = read_idx(shared_data / "mnist" / "train-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(x, images[index].reshape(50, 784) / np.float32(255))
    np.testing.assert_array_equal(t, labels[index])


@pytest.mark.parametrize("order", ["shard", "global"])
@pytest.mark.parametrize("start_step", [0, 5, 24, 25])
def test_a_resumed_epoch_continues_the_same_sequence(make_h5, order, start_step):
    tb = _batches(make_h5(n_train=1000), order=order, augment=AUGMENT)
    _same(list(tb.epoch(2, start_step=start_step)), list(tb.epoch(2))[start_step:])


def test_start_step_past_the_epoch_is_an_error(make_h5):
    with pytest.raises(ValueError, match="start_step 26: expected 0..25"):
        _batches(make_h5(n_train=1000)).epoch(0, start_step=26)


# --- prefetch --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["shard", "global"])
def test_prefetch_on_and_off_give_the_same_batches(make_h5, order):
    path = make_h5()
    kw = {"order": order, "augment": AUGMENT, "world_size": 2, "rank": 1}
    _same(_epoch(path, prefetch=True, **kw), _epoch(path, prefetch=False, **kw))


@pytest.mark.parametrize("prefetch", [True, False])
def test_an_error_while_making_a_batch_reaches_the_training_loop(make_h5, monkeypatch, prefetch):
    def broken(*args, **kw):
        raise MemoryError("no room for this batch")

    tb = _batches(make_h5(), prefetch=prefetch)
    monkeypatch.setattr(batches_module, "to_inputs", broken)
    with pytest.raises(MemoryError, match="no room for this batch"):
        for _ in tb.epoch(0):
            pass


# --- options and errors ----------------------------------------------------------------------


def test_a_global_batch_that_does_not_divide_says_what_to_change(make_h5):
    with pytest.raises(
        ValueError, match="does not divide over 3 ranks; set it to a multiple of 3, e.g. 99 or 102"
    ):
        _batches(make_h5(), global_batch=100, world_size=3, rank=0)


@pytest.mark.parametrize(
    "option, words",
    [
        ({"order": "random"}, "data.order 'random': expected one of shard, global"),
        ({"dtype": "int8"}, "dtype 'int8': expected one of float32, float64"),
        ({"dtype": "bogus"}, "dtype 'bogus'"),
        ({"shape": "nhwc"}, "shape 'nhwc'"),
        ({"normalize": "minmax"}, "normalize 'minmax'"),
        ({"seed": -1}, "seed -1"),
        ({"global_batch": 0}, "train.batch_size 0"),
        ({"rank": 1}, "rank 1 of world_size 1"),
        ({"augment": {"flip": True}}, "unknown key 'flip'"),
        ({"split": "extra"}, "no /extra split"),
        ({"global_batch": 2000}, "fewer than one global batch of 2000"),
    ],
)
def test_bad_options_are_one_line_errors(make_h5, option, words):
    with pytest.raises(ValueError, match=words):
        _batches(make_h5(), **option)


def test_a_val_split_can_be_trained_on(make_h5, ids):
    x, _ = _epoch(make_h5(n_val=80), split="val")[0]
    assert set(ids(x)) <= set(range(20000, 20080))


def test_standardised_batches_use_the_stored_train_statistics(make_h5, ids):
    path = make_h5()
    with h5py.File(path, "r") as f:
        mean, std = f.attrs["pixel_mean"], f.attrs["pixel_std"]
    unit = _epoch(path, prefetch=False)
    standard = _epoch(path, normalize="standard")
    for (xu, _), (xs, _) in zip(unit, standard, strict=True):
        assert xs.dtype == np.float32
        np.testing.assert_allclose(xs, (xu - mean) / std, rtol=1e-5, atol=1e-5)
    everything = np.concatenate([x for x, _ in standard])
    assert abs(everything.mean()) < 0.01 and abs(everything.std() - 1) < 0.01


# --- evaluation shares -----------------------------------------------------------------------


@pytest.mark.parametrize("world_size", range(1, 8))
def test_eval_shares_cover_every_test_sample_exactly_once(make_h5, ids, world_size):
    path = make_h5(n_test=257)
    shares = [eval_share(path, "test", rank, world_size) for rank in range(world_size)]
    all_ids = np.concatenate([ids(x) for x, _ in shares])
    np.testing.assert_array_equal(all_ids, np.arange(10000, 10257))
    np.testing.assert_array_equal(np.concatenate([t for _, t in shares]), all_ids % 10)
    assert all(t.dtype == np.int64 for _, t in shares)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eval_share_of_the_real_test_set(mnist_h5, shared_data, dtype):
    x, t = eval_share(mnist_h5, "test", 2, 3, dtype=dtype, shape="image")
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (3333, 1, 28, 28) and x.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(x[:, 0], images[6667:] / np.dtype(dtype).type(255))
    np.testing.assert_array_equal(t, labels[6667:])


def test_an_empty_share_is_fine(make_h5):
    x, t = eval_share(make_h5(n_test=3), "test", 4, 5)
    assert x.shape == (0, 784) and t.shape == (0,)


# --- one iterator over the run's steps -------------------------------------------------------


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("accumulate, start", [(1, 0), (1, 23), (2, 0), (2, 11), (3, 7)])
def test_steps_cross_epochs_with_the_batches_of_each_epoch(make_h5, prefetch, accumulate, start):
    """25 micro-batches per epoch: with accumulate=2, 12 steps per epoch and the 25th
    micro-batch is skipped; resuming at `start` continues the same sequence."""
    tb = _batches(make_h5(n_train=1000), order="global", augment=AUGMENT, prefetch=prefetch)
    per_epoch = 25 // accumulate
    expected = []
    for epoch in range(3):
        micro = list(tb.epoch(epoch))
        expected += [micro[s * accumulate : (s + 1) * accumulate] for s in range(per_epoch)]
    got = list(tb.steps(start, 3 * per_epoch, accumulate))
    assert [len(step) for step in got] == [accumulate] * (3 * per_epoch - start)
    _same([b for step in got for b in step], [b for step in expected[start:] for b in step])


def test_steps_stopped_early_leave_no_thread(make_h5):
    import threading

    steps = _batches(make_h5(n_train=1000)).steps(0, 50)
    next(steps)
    steps.close()
    assert not [t for t in threading.enumerate() if t.name == "mpinet-prefetch"]
