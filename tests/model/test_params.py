"""ParamBuffer: one contiguous allocation, named views in construction order."""

import numpy as np
import pytest

from mpinet.model import ParamBuffer


def test_views_alias_the_flat_arrays_in_construction_order():
    buf = ParamBuffer([("b.W", (2, 3)), ("a.b", (3,))], dtype="float64")
    assert list(buf.params) == ["b.W", "a.b"]  # not sorted: construction order
    assert buf.size == 9 and buf.data.shape == (9,) and buf.grad.dtype == np.float64
    buf.params["a.b"][...] = 7
    assert np.all(buf.data[6:] == 7)
    buf.data[:6] = np.arange(6)
    np.testing.assert_array_equal(buf.params["b.W"], [[0, 1, 2], [3, 4, 5]])
    buf.grad[:] = 1
    assert buf.grads["b.W"].sum() == 6
    assert buf.offsets() == {"b.W": (0, 6), "a.b": (6, 9)}
    assert buf.layout() == (("b.W", (2, 3), "<f8"), ("a.b", (3,), "<f8"))
    assert buf.shares_memory()


def test_checksum_changes_with_the_data():
    buf = ParamBuffer([("w", (4,))])
    before = buf.checksum()
    buf.params["w"][0] = 1
    assert buf.checksum() != before


def test_rebinding_is_detected():
    buf = ParamBuffer([("w", (4,))])
    buf.params["w"] = np.zeros(4, np.float32)  # the mistake the rule forbids
    assert not buf.shares_memory()


def test_state_buffer_has_no_gradient_and_bad_input_is_named():
    state = ParamBuffer([("bn.running_mean", (3,))], with_grad=False)
    assert state.grad is None and state.grads == {}
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        ParamBuffer([("w", (1,))], dtype="int32")
    with pytest.raises(ValueError, match="duplicate parameter names"):
        ParamBuffer([("w", (1,)), ("w", (2,))])
