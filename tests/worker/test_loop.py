"""The training loop in process, with a LocalComm: the step's parts, and whole short runs on
the real MNIST (the same loop under mpirun: tests/integration)."""

import json
import math

import numpy as np
import pytest

from mpinet.cluster import AllRanksError, LocalComm
from mpinet.model import build
from mpinet.worker.config import load_config
from mpinet.worker.evaluate import tally
from mpinet.worker.loop import GradSum, Laps, TrainSums, clip_grad_norm, due, stop_requested, train
from mpinet.worker.preemption import Preemption
from mpinet.worker.run import Schedule

QUICK = ["model.name='mlp'", "model.hidden=[32]", "train.plots=false", "train.log_every=10"]


@pytest.mark.parametrize(
    "every, expected",
    [
        (0, [10, 20, 25]),  # epoch ends (10 steps each) and the last step
        (4, [4, 8, 10, 12, 16, 20, 24, 25]),
        (10, [10, 20, 25]),
    ],
)
def test_evaluations_fall_on_epoch_ends_the_last_step_and_every_n(every, expected):
    assert [s for s in range(1, 26) if due(s, every, Schedule(10, 25, 0.0))] == expected


class _Run:  # the two fields GradSum reads
    def __init__(self, accumulate, grad):
        self.cfg = load_config(None, [f"optim.accumulate={accumulate}"])
        self.net = type("Net", (), {"buffer": type("Buffer", (), {"grad": grad})})


def test_grad_sum_is_the_mean_of_the_micro_batch_gradients():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(3)]
    grad = np.empty(50, np.float32)
    grad_sum = GradSum(_Run(3, grad))
    for g in grads:
        grad[...] = g  # what backward does: overwrite
        grad_sum.add(grad)
    grad_sum.mean_into(grad)
    np.testing.assert_array_equal(grad, (grads[0] + grads[1] + grads[2]) * np.float32(1 / 3))


def test_grad_sum_leaves_a_single_micro_batch_alone():
    grad = np.arange(5, dtype=np.float32)
    grad_sum = GradSum(_Run(1, grad))
    grad_sum.add(grad)
    grad_sum.mean_into(grad)
    np.testing.assert_array_equal(grad, np.arange(5))


def test_laps_split_the_step_into_its_phases():
    laps = Laps()
    for phase in ("data", "forward", "forward", "optimizer"):
        laps.lap(phase)
    assert set(laps.seconds) == {"data", "forward", "backward", "allreduce", "optimizer"}
    assert laps.seconds["backward"] == 0.0 and all(s >= 0 for s in laps.seconds.values())


def test_clip_grad_norm_clips_the_global_norm_and_stops_on_nan():
    grad = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm(grad, 1.0, step=0) == 5.0
    assert math.isclose(float(np.linalg.norm(grad)), 1.0, rel_tol=4 * np.finfo(np.float32).eps)
    with pytest.raises(AllRanksError, match="step 7: the gradient is not finite"):
        clip_grad_norm(np.array([np.nan], np.float32), 0.0, step=7)


def test_stop_requested_by_a_signal_or_by_stop_after():
    class Run:
        comm, cfg, preemption = LocalComm(), load_config(None, ["train.stop_after=5"]), None

    run = Run()
    run.preemption = Preemption()
    try:
        assert stop_requested(run, 4) is None
        assert stop_requested(run, 5) == ("train.stop_after=5", 0)
        run.preemption.flags[0] = 1  # SIGTERM arrived
        assert stop_requested(run, 4) == ("SIGTERM", 75)
        run.preemption.flags[2] = 1  # and Ctrl-C: the person at the terminal wins
        assert stop_requested(run, 4) == ("Ctrl-C", 130)
    finally:
        run.preemption.close()


def test_train_sums_count_the_loss_and_correct_answers_of_a_batch():
    net = build({"name": "mlp", "hidden": [8]}, seed=0)
    x = np.random.default_rng(1).random((20, 784), dtype=np.float32)
    t = np.arange(20) % 10
    sums = TrainSums()
    loss = net.loss(x, t)
    sums.add(loss, net, t)
    predicted = net.predict(x).argmax(axis=1)
    assert sums.values() == [loss * 20, float(np.sum(predicted == t)), 20.0]


def test_tally_is_the_loss_layers_loss_and_the_argmax_counts():
    net = build({"name": "mlp", "hidden": [8]}, seed=0)
    rng = np.random.default_rng(2)
    x, t = rng.random((250, 784), dtype=np.float32), rng.integers(0, 10, 250)
    counts, loss_sum = tally(net, x, t, batch_size=100)
    # The same batches of 100: a GEMM of another height may round differently (BLAS kernels).
    ys = [net.forward(x[i : i + 100], train=False) for i in (0, 100, 200)]
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (t, np.concatenate(ys).argmax(axis=1)), 1)
    np.testing.assert_array_equal(counts, expected)
    means = [
        net.loss_layer.forward(y, t[i : i + 100]) for y, i in zip(ys, (0, 100, 200), strict=True)
    ]
    assert loss_sum == pytest.approx(100 * means[0] + 100 * means[1] + 50 * means[2], rel=1e-12)


def _train(mnist_h5, run_dir, *settings, ckpt=None):
    cfg = load_config(None, [*QUICK, f"data.path='{mnist_h5}'", *settings])
    return train(cfg, LocalComm(), run_dir, ckpt)


def test_a_short_run_in_process_writes_its_history_and_summary(mnist_h5, tmp_path):
    summary, net = _train(mnist_h5, tmp_path / "run", "train.max_steps=30", "train.eval_every=15")
    assert (summary["steps"], summary["complete"], summary["exit_code"]) == (30, True, 0)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").open()]
    assert [row["step"] for row in history] == [15, 30]
    assert history[-1]["test_samples"] == 10000 and history[-1]["test_accuracy"] > 0.5
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "steps.jsonl").open()]
    assert steps == [10, 20, 30]
    assert summary["params_sha256"] == net.buffer.checksum()


def test_stopped_and_resumed_in_process_equals_straight(mnist_h5, tmp_path):
    from mpinet.worker.checkpoint_dir import find_resume

    settings = ["train.max_steps=30", "train.eval_every=10", "optim.accumulate=2"]
    straight, _ = _train(mnist_h5, tmp_path / "a", *settings)
    stopped, _ = _train(mnist_h5, tmp_path / "b", *settings, "train.stop_after=13")
    assert (stopped["steps"], stopped["stopped_by"]) == (13, "train.stop_after=13")
    ckpt = find_resume(tmp_path / "b")
    resumed, _ = _train(mnist_h5, tmp_path / "b", *settings, ckpt=ckpt)
    assert resumed["steps"] == 30 and resumed["params_sha256"] == straight["params_sha256"]
    rows = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").open()]
    reference = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").open()]
    assert [r["test_loss"] for r in rows] == [r["test_loss"] for r in reference]


def test_after_a_ctrl_c_a_second_one_still_stops_at_once():
    """The run stops for the first Ctrl-C; while it finishes, the second must still raise
    KeyboardInterrupt (the one-line "stopped at once", exit 130), not a default handler."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    preemption = Preemption()
    preemption.flags[2] = 1  # the first Ctrl-C arrived
    preemption.close()
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, before)
    quiet = Preemption()
    quiet.close()  # no signal: every handler as it was
    assert signal.getsignal(signal.SIGINT) is before
