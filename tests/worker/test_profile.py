"""--profile START:COUNT in process: the window's parsing and bound, the per-layer spans, the
Chrome trace built from every rank's spans (clocks aligned, the allreduce split), and a
profiled run that ends with the same bits as an unprofiled one (the real job: integration)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from mpinet.cluster import AllRanksError, LocalComm
from mpinet.model import build
from mpinet.worker.config import load_config
from mpinet.worker.loop import PHASES, Laps, train
from mpinet.worker.profile import (
    MAX_EVENTS,
    Profile,
    TracedLaps,
    events_per_step,
    parse_profile,
)
from mpinet.worker.trace import ROWS, trace_json

QUICK = ["model.name='mlp'", "model.hidden=[32]", "train.plots=false", "train.max_steps=10"]


@pytest.mark.parametrize("text, window", [("", None), ("0:1", (0, 1)), ("100:20", (100, 20))])
def test_a_profile_window_is_start_colon_count(text, window):
    assert parse_profile(text) == window


@pytest.mark.parametrize("text", ["5", "5:0", "-1:4", "5:4:1", " 5:4", "a:b", "5-4", "٣:4"])
def test_any_other_profile_value_is_one_config_error(text):
    with pytest.raises(ValueError) as error:
        load_config(None, [f"train.profile={text!r}"])
    message = str(error.value)
    assert message.startswith(f"config key train.profile: got {text!r}; expected START:COUNT")
    assert "\n" not in message


class _Run:  # what Profile reads of a run
    def __init__(self, net, step=0, total_steps=100):
        self.net, self.step = net, step
        self.schedule = type("Schedule", (), {"total_steps": total_steps})


def _profile(tmp_path, text, net=None, **run):
    cfg = load_config(None, [f"train.profile={text!r}"])
    net = net or build({"name": "mlp", "hidden": [8]})
    return Profile(cfg, LocalComm(), _Run(net, **run), tmp_path, PHASES)


def test_profiling_off_is_an_empty_window(tmp_path):
    assert _profile(tmp_path, "").steps == range(0)


def test_the_window_is_cut_to_the_steps_the_run_does(tmp_path):
    assert _profile(tmp_path, "5:20", step=8, total_steps=15).steps == range(8, 15)
    assert _profile(tmp_path, "50:20", total_steps=15).steps == range(0)  # a warning, no trace


def test_a_window_of_too_many_events_is_refused_in_one_line(tmp_path):
    net = build({"name": "mlp"})  # 9 layers: up to 28 spans a step (the weight decay's)
    assert _profile(tmp_path, f"0:{MAX_EVENTS // 28}", net=net).steps
    with pytest.raises(AllRanksError) as error:
        _profile(tmp_path, f"0:{MAX_EVENTS // 28 + 1}", net=net)
    assert str(error.value).endswith("expected at most 100,000; profile at most 3571 steps")


def test_traced_laps_count_the_phases_as_laps_do_and_time_every_layer(tmp_path):
    net = build({"name": "mlp", "hidden": [8]})
    profile = _profile(tmp_path, "0:1", net=net)
    x, t = np.random.default_rng(0).random((4, 784), dtype=np.float32), np.arange(4)
    laps = profile.laps(0)
    laps.lap("data")
    net.loss(x, t, spans=laps.trace)
    laps.lap("forward")
    net.backward(spans=laps.trace)
    laps.lap("backward")
    assert list(laps.seconds) == list(Laps().seconds) and Laps.trace is None
    rows = [(row, name) for row, name, *_ in profile.spans]
    layers = list(net.layers)
    assert rows == [
        ("data", "data"),
        *[("forward", name) for name in [*layers, "loss"]],
        *[("backward", name) for name in ["loss", *reversed(layers)]],
    ]
    ends = [span[3] for span in profile.spans]
    assert [span[2] for span in profile.spans[1:]] == ends[:-1]  # contiguous: no gaps
    assert sum(laps.seconds.values()) == pytest.approx(ends[-1] - profile.spans[0][2])


def test_the_network_computes_the_same_bits_with_spans():
    rng = np.random.default_rng(0)
    x, t = rng.random((6, 784), dtype=np.float32), np.arange(6)
    nets = [build({"name": "mlp", "hidden": [8], "weight_decay": 0.1}) for _ in range(2)]
    recorder = TracedLaps(SimpleNamespace(spans=[], phases=PHASES), 0)
    losses = [nets[0].loss(x, t), nets[1].loss(x, t, spans=recorder)]
    nets[0].backward()
    nets[1].backward(spans=recorder)
    assert losses[0] == losses[1]
    assert np.array_equal(nets[0].buffer.grad, nets[1].buffer.grad)
    assert recorder.profile.spans[-1][:2] == ["backward", "weight_decay"]


def _spans(step, allreduce_start, shift=0.0):
    """One rank's spans of one step, in a clock `shift` seconds ahead of rank 0's."""
    times = [0.0, 0.001, 0.002, allreduce_start, 0.02, 0.021, 0.022]
    rows = ["data", "forward", "backward", "allreduce", "clip", "optimizer"]
    ends = zip(rows, times, times[1:], strict=False)  # 6 rows between 7 times
    spans = [[r, r, a + shift, b + shift, step] for r, a, b in ends]
    return spans + [["step", f"step {step}", shift, times[-1] + shift, step]]


def test_the_trace_aligns_the_clocks_and_splits_the_allreduce():
    shift = 1000.0  # rank 1's perf_counter reads 1000 s more than rank 0's
    spans = [_spans(3, 0.004), _spans(3, 0.009, shift)]  # rank 1 comes late to the allreduce
    clocks = [[(0.0, 0.0, 0.0)] * 2, [(-shift, 2e-6, shift), (-shift, 2e-6, shift + 1)]]
    trace = json.loads(trace_json(spans, clocks, steps=[3, 3]))
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    threads = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    assert threads == {(rank, row) for rank in (0, 1) for row in ROWS}
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {0: "rank 0", 1: "rank 1"}
    x = {(e["pid"], e["cat"]): e for e in events if e["ph"] == "X"}
    assert x[(0, "allreduce wait")]["dur"] == pytest.approx(5000.0)  # waited 5 ms for rank 1
    assert x[(1, "allreduce wait")]["dur"] == 0.0
    assert x[(0, "allreduce transfer")]["ts"] == x[(1, "allreduce transfer")]["ts"] == 9000.0
    assert x[(1, "data")]["ts"] == 0.0 and trace["otherData"]["clock_error_us"] == [0.0, 1.0]


def test_the_trace_follows_a_clock_that_drifts():
    spans = [[["data", "data", 10.0, 11.0, 0]], [["data", "data", 10.0, 11.0, 0]]]
    drifting = [(0.0, 0.0, 0.0), (-1e-3, 0.0, 20.0)]  # 1 ms slower over 20 s: 50 ppm
    clocks = [[(0.0, 0.0, 0.0)] * 2, drifting]
    events = json.loads(trace_json(spans, clocks, [0, 0]))["traceEvents"]
    x = {e["pid"]: e for e in events if e["ph"] == "X"}
    assert x[0]["ts"] == pytest.approx(500.0) and x[1]["ts"] == 0.0  # 0.5 ms behind at 10 s
    assert x[1]["dur"] == pytest.approx(1e6 - 50)


def test_a_profiled_run_writes_the_trace_and_ends_with_the_same_bits(mnist_h5, tmp_path):
    def run(name, *settings):
        cfg = load_config(None, [*QUICK, f"data.path='{mnist_h5}'", *settings])
        return train(cfg, LocalComm(), tmp_path / name)

    plain, _ = run("plain")
    profiled, net = run("profiled", "train.profile='3:4'")
    assert profiled["params_sha256"] == plain["params_sha256"]
    assert not (tmp_path / "plain" / "trace.json").exists()
    trace = json.loads((tmp_path / "profiled" / "trace.json").read_text())
    steps = [e["args"]["step"] for e in trace["traceEvents"] if e["ph"] == "X"]
    assert set(steps) == {3, 4, 5, 6} and trace["otherData"]["steps"] == [3, 6]
    layers = len(net.layers)  # no weight decay: one span fewer than the bound
    assert steps.count(3) == 1 + 2 * (layers + 1) + 6 == events_per_step(net, 1) - 1


def test_a_run_stopped_inside_the_window_writes_the_steps_it_did(mnist_h5, tmp_path):
    cfg = load_config(
        None,
        [*QUICK, f"data.path='{mnist_h5}'", "train.profile='3:4'", "train.stop_after=5"],
    )
    summary, _ = train(cfg, LocalComm(), tmp_path / "run")
    assert summary["stopped_by"] == "train.stop_after=5"
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert trace["otherData"]["steps"] == [3, 4]  # steps 3 and 4 (0-based): 5 steps done
