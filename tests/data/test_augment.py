"""Augmentation: exact shifts, rotations, determinism, dtype, off by default."""

import numpy as np
import pytest

from mpinet.data import TrainBatches
from mpinet.data.augment import check_augment, draw, shift_rotate

AUGMENT = {"shift": 2, "rotate": 10.0}


def _images(n=6, dtype=np.float32):
    return np.random.default_rng(0).random((n, 28, 28)).astype(dtype)


def _batch(path, **kw):
    tb = TrainBatches(path, global_batch=50, rank=0, world_size=1, seed=1, **kw)
    return next(tb.epoch(0))


def test_integer_shifts_move_pixels_exactly():
    x = _images(3)
    out = shift_rotate(x, dy=[2, 0, -1], dx=[0, -3, 1], degrees=[0, 0, 0])
    np.testing.assert_array_equal(out[0, 2:], x[0, :-2])
    np.testing.assert_array_equal(out[0, :2], 0)  # moved in from outside: black
    np.testing.assert_array_equal(out[1, :, :-3], x[1, :, 3:])
    np.testing.assert_array_equal(out[1, :, -3:], 0)
    np.testing.assert_array_equal(out[2, :-1, 1:], x[2, 1:, :-1])


def test_no_move_is_the_identity():
    x = _images()
    np.testing.assert_array_equal(shift_rotate(x, [0] * 6, [0] * 6, [0.0] * 6), x)


def test_a_quarter_turn_is_rot90():
    x = _images(2, np.float64)
    out = shift_rotate(x, [0, 0], [0, 0], [90.0, -90.0])
    np.testing.assert_allclose(out[0], np.rot90(x[0], 1), atol=1e-12)
    np.testing.assert_allclose(out[1], np.rot90(x[1], -1), atol=1e-12)


def test_small_rotations_keep_values_in_range_and_mass_roughly():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10:18, 12:16] = 1.0  # a bar well inside the frame
    out = shift_rotate(x, [0], [0], [10.0])
    assert 0 <= out.min() and out.max() <= 1
    assert out.sum() == pytest.approx(x.sum(), rel=0.02)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift_rotate_keeps_dtype_and_shape(dtype):
    x = _images(5, dtype)
    dy, dx, degrees = draw(np.random.default_rng(0), 5, 2, 10.0)
    out = shift_rotate(x, dy, dx, degrees)
    assert out.dtype == dtype and out.shape == x.shape


def test_draw_respects_the_limits():
    dy, dx, degrees = draw(np.random.default_rng(0), 10000, 2, 10.0)
    assert set(np.unique(dy)) == {-2, -1, 0, 1, 2} == set(np.unique(dx))
    assert -10 <= degrees.min() < -9 and 9 < degrees.max() <= 10


@pytest.mark.parametrize("shape", ["flat", "image"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_augmented_batches_keep_shape_and_dtype_and_differ(make_h5, shape, dtype):
    path = make_h5()
    plain_x, plain_t = _batch(path, shape=shape, dtype=dtype)
    x, t = _batch(path, shape=shape, dtype=dtype, augment=AUGMENT)
    assert x.shape == plain_x.shape and x.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t, plain_t)  # same samples ...
    changed = (x != plain_x).reshape(len(x), -1).any(axis=1)
    assert changed.mean() > 0.9  # ... moved (a few may draw shift 0 and a tiny angle)


def test_augmentation_is_deterministic_and_varies_by_epoch_and_rank(make_h5):
    path = make_h5()

    def first(epoch=0, rank=0):
        tb = TrainBatches(path, global_batch=50, rank=rank, world_size=2, seed=1, augment=AUGMENT)
        return next(tb.epoch(epoch))[0]

    np.testing.assert_array_equal(first(), first())
    assert not np.array_equal(first(), first(epoch=1))
    assert not np.array_equal(first(), first(rank=1))


def test_augmentation_is_off_by_default(make_h5):
    tb = TrainBatches(make_h5(), global_batch=50, rank=0, world_size=1, seed=1)
    assert tb.augment is None
    x, _ = next(tb.epoch(0))
    assert set(np.unique(np.rint(x * 255))) <= set(range(256))  # untouched pixels only


@pytest.mark.parametrize("value", [None, {}, {"shift": 0}, {"shift": 0, "rotate": 0.0}])
def test_settings_that_do_nothing_turn_augmentation_off(value):
    assert check_augment(value) is None


@pytest.mark.parametrize(
    "value, words",
    [
        ({"shift": 1.5}, "augment: shift 1.5"),
        ({"shift": -1}, "augment: shift -1"),
        ({"shift": True}, "augment: shift True"),
        ({"rotate": 400}, "augment: rotate 400"),
        ({"rotate": "10"}, "augment: rotate '10'"),
        ({"scale": 1.1}, "unknown key 'scale'; valid keys: shift, rotate"),
        ("shift=2", "expected a table"),
    ],
)
def test_bad_settings_are_one_line_errors(value, words):
    with pytest.raises(ValueError, match=words):
        check_augment(value)


def test_valid_settings_are_normalised():
    assert check_augment({"shift": 2}) == {"shift": 2, "rotate": 0.0}
    assert check_augment({"rotate": 15}) == {"shift": 0, "rotate": 15.0}
