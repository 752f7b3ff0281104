"""The book's functions: numerically safe, batch-aware, dtype-preserving."""

import numpy as np
import pytest

from mpinet.model.functions import (
    cross_entropy_error,
    mean_squared_error,
    relu,
    sigmoid,
    softmax,
    softmax_and_log,
    step_function,
)
from mpinet.model.gradient import numerical_gradient


def test_softmax_subtracts_the_max_and_handles_batches():
    a = np.array([1010.0, 1000.0, 990.0])
    y = softmax(a)
    assert np.all(np.isfinite(y)) and y.sum() == pytest.approx(1.0)
    batch = np.stack([a, a - 1000])
    np.testing.assert_allclose(softmax(batch), np.stack([y, y]))
    assert softmax(np.ones((2, 3), np.float32)).dtype == np.float32


def test_sigmoid_relu_step():
    x = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0])
    s = sigmoid(x)
    assert np.all(np.isfinite(s)) and s[2] == 0.5 and s[0] == 0 and s[-1] == 1
    np.testing.assert_array_equal(relu(x), [0, 0, 0, 2, 1000])
    np.testing.assert_array_equal(step_function(x), [0, 0, 0, 1, 1])
    assert sigmoid(np.zeros(3, np.float32)).dtype == np.float32


def test_cross_entropy_for_index_and_one_hot_labels():
    y = np.array([[0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]])
    t_onehot = np.zeros((1, 10))
    t_onehot[0, 2] = 1
    assert cross_entropy_error(y, t_onehot) == pytest.approx(0.510825457099338)  # the book's
    assert cross_entropy_error(y, np.array([2])) == pytest.approx(0.510825457099338)
    assert cross_entropy_error(y[0], 2) == pytest.approx(0.510825457099338)


def test_mean_squared_error_matches_the_book():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t = np.zeros(10)
    t[2] = 1
    assert mean_squared_error(y, t) == pytest.approx(0.0975)


def test_numerical_gradient_of_the_books_function():
    x = np.array([3.0, 4.0])
    g = numerical_gradient(lambda: float(np.sum(x**2)), x)
    np.testing.assert_allclose(g, [6.0, 8.0], rtol=1e-6)
    assert np.array_equal(x, [3.0, 4.0])  # restored after perturbation


def test_softmax_and_log_gives_the_exact_log_where_a_probability_underflows():
    x = np.array([[0.0, -800.0, 3.0], [1.0, 2.0, 3.0]])
    y, log_y = softmax_and_log(x)
    np.testing.assert_array_equal(y, softmax(x))
    assert y[0, 1] == 0 and np.isfinite(log_y).all()
    np.testing.assert_allclose(log_y[1], np.log(y[1]))
    assert log_y[0, 1] == pytest.approx(-803.0485873515737)  # -800 - 3 - log(1 + e^-3)


def test_the_loss_layer_and_predict_proba_share_the_one_softmax():
    from mpinet.model import build
    from mpinet.model.layers import SoftmaxWithLoss

    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((7, 10)).astype(np.float32), rng.integers(0, 10, 7)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    np.testing.assert_array_equal(layer.y, softmax(x))
    assert loss == -float(np.sum(softmax_and_log(x)[1][np.arange(7), t])) / 7
    net = build({"name": "mlp", "hidden": [8]})
    pixels = rng.random((5, 784), dtype=np.float32)
    np.testing.assert_array_equal(net.predict_proba(pixels), softmax(net.predict(pixels)))
