"""`mpirun -n 2 mpinet train --profile 5:4`: the trace.json rank 0 writes, read back as
Perfetto reads it: every rank, every phase, no overlap on a row, the spans adding up to the
step, the clocks aligned, a straggler seen as the other rank's wait; and the refusals."""

import json
import sys
from collections import defaultdict

import pytest
from support import job_environment, mpinet_command, run_job

from mpinet.worker.trace import ROWS

pytestmark = pytest.mark.mpi
TINY = {
    "mlp": ["model.name='mlp'", "model.hidden=[32, 16]"],
    "simple_cnn": ["model.name='simple_cnn'", "model.filters=8", "model.hidden=32"],
}
QUICK = ["train.max_steps=12", "train.batch_size=48", "train.plots=false", "train.eval_every=0"]
# A rank whose backward of step 6 takes 0.2 s longer: the other rank waits for it.
STRAGGLER = """
import sys, time
from mpi4py import MPI
from mpinet.model.network import Network
from mpinet.worker.cli import main

backward, calls = Network.backward, []
def slow_backward(self, spans=None):
    calls.append(1)
    if MPI.COMM_WORLD.Get_rank() == 1 and len(calls) == 7:  # step 6 (one micro-batch a step)
        time.sleep(0.2)
    return backward(self, spans)
Network.backward = slow_backward
sys.exit(main(sys.argv[1:]))
"""


def train(launcher, tmp_path, mnist_h5, model, *flags, command=None):
    run_dir = tmp_path / "run"
    args = [*(command or mpinet_command()), "train", "--data", str(mnist_h5)]
    args += ["--run-dir", str(run_dir), *flags]
    for s in [*QUICK, *TINY[model]]:
        args += ["--set", s]
    env = job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"))
    return run_job([launcher, "-n", "2", *args], timeout=120, env=env), run_dir


def spans(trace):
    """{(rank, row): [X events, by ts]} and the names of each rank's processes and threads."""
    rows, names = defaultdict(list), {}
    for e in trace["traceEvents"]:
        if e["ph"] == "M" and e["name"] in ("process_name", "thread_name"):
            names[(e["name"], e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "X":
            rows[(e["pid"], names[("thread_name", e["pid"], e["tid"])])].append(e)
    return {key: sorted(events, key=lambda e: e["ts"]) for key, events in rows.items()}, names


@pytest.mark.parametrize("model", sorted(TINY))
def test_the_trace_holds_every_rank_and_phase_adding_up_to_the_steps(
    launcher, mnist_h5, tmp_path, model
):
    job, run_dir = train(launcher, tmp_path, mnist_h5, model, "--profile", "5:4")
    assert job.returncode == 0, job.output
    trace = json.loads((run_dir / "trace.json").read_text())
    assert trace["displayTimeUnit"] == "ms" and trace["otherData"]["steps"] == [5, 8]
    rows, names = spans(trace)
    assert {v for (kind, _, _), v in names.items() if kind == "process_name"} == {
        "rank 0",
        "rank 1",
    }
    assert set(rows) == {(rank, row) for rank in (0, 1) for row in ROWS}  # every phase
    for (rank, row), events in rows.items():
        assert {e["args"]["step"] for e in events} == {5, 6, 7, 8}, (rank, row)
        for a, b in zip(events, events[1:], strict=False):  # a row's spans never overlap
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-3, (rank, row, a, b)
    layers = {e["name"] for e in rows[(0, "forward")]} - {"loss"}
    assert len(layers) >= 3  # one span per layer of net.layers
    for rank in (0, 1):
        steps = rows[(rank, "step")]
        for step in steps:
            inside = [
                e["dur"]
                for (r, row), events in rows.items()
                if r == rank and row != "step"
                for e in events
                if e["args"]["step"] == step["args"]["step"]
            ]
            assert sum(inside) == pytest.approx(step["dur"], rel=0.10), (rank, step)
        for a, b in zip(steps, steps[1:], strict=False):  # and the steps follow each other
            assert b["ts"] - a["ts"] == pytest.approx(a["dur"], rel=0.10), (rank, a, b)
    other = trace["otherData"]
    for offsets, error in zip(other["clock_offset_us"], other["clock_error_us"], strict=True):
        # one host, one CLOCK_MONOTONIC: the true offset is 0, within the error bound
        assert all(abs(offset) <= error + 0.01 for offset in offsets), other


def test_a_straggler_is_the_other_ranks_allreduce_wait(launcher, mnist_h5, tmp_path):
    script = tmp_path / "straggler.py"
    script.write_text(STRAGGLER)
    command = [sys.executable, str(script)]
    job, run_dir = train(launcher, tmp_path, mnist_h5, "mlp", "--profile", "5:4", command=command)
    assert job.returncode == 0, job.output
    rows, _ = spans(json.loads((run_dir / "trace.json").read_text()))

    def at_step_6(rank, row):
        return sum(e["dur"] for e in rows[(rank, row)] if e["args"]["step"] == 6)

    assert at_step_6(1, "backward") > 200e3  # microseconds
    assert at_step_6(0, "allreduce wait") > 180e3  # rank 0 waited for rank 1
    assert at_step_6(1, "allreduce wait") < 20e3
    assert at_step_6(0, "allreduce transfer") < 50e3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--profile", "5-4"], "config key train.profile: got '5-4'; expected START:COUNT"),
        (["--profile", "0:100000"], "trace events; expected at most 100,000"),
    ],
)
def test_a_bad_profile_is_one_line_exit_2_and_writes_nothing(
    launcher, mnist_h5, tmp_path, flags, message
):
    job, run_dir = train(launcher, tmp_path, mnist_h5, "mlp", *flags)
    assert job.returncode == 2, job.output
    errors = [line for line in job.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0], job.stderr
    assert "Traceback" not in job.stderr and not run_dir.exists()


def test_without_profile_no_trace_is_written(launcher, mnist_h5, tmp_path):
    job, run_dir = train(launcher, tmp_path, mnist_h5, "mlp")
    assert job.returncode == 0, job.output
    assert (run_dir / "summary.json").exists() and not (run_dir / "trace.json").exists()
