"""Optimizers: one hand-computed step each, flat == per-tensor, state round-trip, validation."""

import numpy as np
import pytest

from mpinet.model.optimizers import FLUSH_EVERY, OPTIMIZERS, create
from mpinet.model.schedules import learning_rate

P0, G = np.array([1.0, -2.0]), np.array([0.5, 0.25])

# Expected parameters after ONE step from P0 with gradient G, computed by hand.
EXPECTED = {
    "sgd": P0 - 0.1 * G,
    "momentum": P0 - 0.1 * G,  # v = -lr*g
    "nesterov": P0 + 0.81 * (-0.1 * G) - 1.9 * 0.1 * G,
    "adagrad": P0 - 0.1 * G / (np.abs(G) + 1e-7),
    "rmsprop": P0 - 0.1 * G / (np.sqrt(0.01 * G * G) + 1e-7),
    # lr_t = lr*sqrt(1-b2)/(1-b1); m = 0.1 g; v = 0.001 g^2
    "adam": P0 - 0.1 * np.sqrt(0.001) / 0.1 * (0.1 * G) / (np.sqrt(0.001 * G * G) + 1e-7),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_step_matches_the_hand_computation(name):
    p = P0.copy()
    create(name, lr=0.1).update(p, G)
    np.testing.assert_allclose(p, EXPECTED[name], rtol=1e-9)


@pytest.mark.numerics
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flat_update_equals_per_tensor_update(name, rng):
    shapes = [(3, 4), (4,), (2, 3, 5)]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = rng.standard_normal(sum(sizes))
    tensors = [
        t.reshape(s).copy()
        for t, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes, strict=True)
    ]
    flat_opt = create(name, lr=0.05)
    per_tensor = [create(name, lr=0.05) for _ in shapes]
    for _ in range(5):
        grads = [rng.standard_normal(s) for s in shapes]
        flat_opt.update(flat, np.concatenate([g.ravel() for g in grads]))
        for opt, t, g in zip(per_tensor, tensors, grads, strict=True):
            opt.update(t, g)
    np.testing.assert_array_equal(flat, np.concatenate([t.ravel() for t in tensors]))


DECAYING = {"momentum": ["v"], "nesterov": ["v"], "rmsprop": ["h"], "adam": ["m", "v"]}


@pytest.mark.parametrize("name", sorted(DECAYING))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_of_zero_gradients_never_stays_denormal(name, dtype):
    """Entry 0 starts just above the denormal range with gradient 0 from then on: its state
    decays into that range; entry 1 keeps a gradient, and its state stays normal."""
    tiny = np.finfo(dtype).tiny
    opt = create(name, lr=0.01)
    opt.load_state_dict(
        {"iter": 0, **{k: np.array([1.1 * tiny, 0.1], dtype) for k in DECAYING[name]}}
    )
    p, g = np.ones(2, dtype), np.array([0.0, 0.5], dtype)
    seen = False
    for _ in range(3 * FLUSH_EVERY):
        opt.update(p, g)
        state = [opt.state_dict()[k] for k in DECAYING[name]]
        denormal = any(0 < abs(a[0]) < tiny for a in state)
        seen |= denormal
        if opt.iter % FLUSH_EVERY == 0:
            assert not denormal, f"step {opt.iter}: a denormal state survived the flush"
            assert all(abs(a[1]) > tiny for a in state)
    assert seen, "the state never became denormal: the test shows nothing"


@pytest.mark.numerics
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name, rng):
    p1 = rng.standard_normal(10).astype(np.float32)
    a = create(name, lr=0.01)
    for _ in range(3):
        a.update(p1, rng.standard_normal(10).astype(np.float32))
    p2 = p1.copy()
    b = create(name, lr=0.01)
    b.load_state_dict(a.state_dict())
    g = rng.standard_normal(10).astype(np.float32)
    a.update(p1, g)
    b.update(p2, g)
    np.testing.assert_array_equal(p1, p2)
    assert a.state_dict()["iter"] == 4
    assert p1.dtype == np.float32  # float32 stays float32


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("adam", {"lr": -0.001}, r"Adam: lr must be > 0, got -0.001"),
        ("momentum", {"momentum": 1.5}, r"Momentum: momentum must be in \[0, 1\), got 1.5"),
        ("rmsprop", {"decay_rate": 1.0}, r"RMSprop: decay_rate must be in \[0, 1\)"),
        ("sgd", {"momentum": 0.9}, r"optimizer 'sgd': .*momentum"),
        ("adamw", {}, r"unknown optimizer 'adamw'; valid names: \['adagrad', 'adam'"),
    ],
)
def test_bad_hyperparameters_are_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create(name, **kwargs)


def test_schedules_are_pure_functions_of_the_step():
    assert learning_rate(10, 0.1) == 0.1
    assert learning_rate(2500, 0.1, "step", step_size=1000, gamma=0.5) == pytest.approx(0.025)
    assert learning_rate(0, 0.1, "cosine", total_steps=100) == pytest.approx(0.1)
    assert learning_rate(50, 0.1, "cosine", total_steps=100) == pytest.approx(0.05)
    assert learning_rate(100, 0.1, "cosine", total_steps=100, min_lr=0.01) == pytest.approx(0.01)
    warm = [learning_rate(s, 0.1, warmup_steps=4) for s in range(6)]
    assert warm == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        learning_rate(0, 0.1, "exp")
