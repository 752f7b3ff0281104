"""`mpinet scale RUN_DIR`: a run trained with --profile under mpirun -n 2, predicted on more
ranks over named and given links; the figures checked against the model worked by hand and
against the run's own trace; and the refusals, one line each."""

import json
import math
import subprocess

import pytest
from support import mpinet_command, mpinet_job

pytestmark = pytest.mark.mpi
TINY = ["model.name='mlp'", "model.hidden=[32, 16]", "train.batch_size=48"]
QUICK = ["train.max_steps=30", "train.plots=false", "train.eval_every=0", "metrics.port=-1"]
GRAD_VALUES = 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10  # the mlp's W and b


@pytest.fixture(scope="module")
def profiled(launcher, mnist_h5, tmp_path_factory):
    """A 2-rank run whose steps 10..29 are profiled."""
    tmp = tmp_path_factory.mktemp("scale")
    run_dir = tmp / "run"
    args = ["train", "--data", mnist_h5, "--run-dir", run_dir, "--profile", "10:20"]
    job = mpinet_job(tmp, *args, n=2, launcher=launcher, sets=[*TINY, *QUICK])
    assert job.returncode == 0, job.output
    return run_dir


def scale(*args):
    return subprocess.run(
        [*mpinet_command(), "scale", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def measured_compute(run_dir):
    """Every profiled rank-step's time less its allreduce, from the trace itself (ms)."""
    trace = json.loads((run_dir / "trace.json").read_text())
    rows = {
        e["tid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    steps = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            sign = {"step": 1, "allreduce wait": -1, "allreduce transfer": -1}.get(rows[e["tid"]])
            key = (e["pid"], e["args"]["step"])
            steps[key] = steps.get(key, 0.0) + (sign or 0) * e["dur"] / 1e3
    return sorted(steps.values())


def test_the_prediction_follows_the_model_and_the_measured_step(profiled):
    done = scale(profiled, "--ranks", "2,3,16,64", "--link", "8gbit,10us", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    run = out["run"]
    assert run["world_size"] == 2 and run["per_rank_batch"] == 24 and run["profiled_steps"] == 40
    assert run["grad_values"] == GRAD_VALUES and run["grad_bytes"] == 4 * GRAD_VALUES
    (table,) = out["tables"]
    gamma = table["reduce_bytes_per_second"]
    rows = {(r["ranks"], r["mode"]): r for r in table["rows"]}
    assert set(rows) == {(n, mode) for n in (2, 3, 16) for mode in ("weak", "strong")} | {
        (64, "weak")  # strong needs one sample per rank: 48 samples cannot go to 64 ranks
    }
    m, alpha, beta = 4 * GRAD_VALUES, 10e-6, 1e-9
    # 16 ranks, Rabenseifner: 2 log2(16) alpha + 2 (15/16) m beta + (15/16) m / gamma; the
    # 8-byte pre-emption flags: recursive doubling, 4 rounds of alpha + 8 beta + 8 / gamma.
    share = 15 / 16 * m
    grad = 8 * alpha + 2 * share * beta + share / gamma
    flags = 4 * (alpha + 8 * beta + 8 / gamma)
    weak = rows[(16, "weak")]
    assert weak["algorithm"] == "Rabenseifner"
    assert weak["allreduce_ms"] == pytest.approx((grad + flags) * 1e3, rel=1e-9)
    assert weak["step_ms"] == pytest.approx(weak["compute_ms"] + weak["allreduce_ms"], rel=1e-12)
    assert weak["samples_per_second"] == pytest.approx(16 * 24 / weak["step_ms"] * 1e3, rel=1e-12)
    assert weak["efficiency"] == pytest.approx(weak["compute_ms"] / weak["step_ms"], rel=1e-12)
    compute = measured_compute(profiled)  # the run's own per-rank batch: its measured steps
    assert compute[0] <= weak["compute_ms"] <= compute[-1]
    strong = rows[(16, "strong")]
    assert strong["per_rank_batch"] == 3 and strong["compute_ms"] < weak["compute_ms"]
    assert 0 < strong["efficiency"] < weak["efficiency"] < 1
    assert rows[(3, "weak")]["allreduce_ms"] > rows[(2, "weak")]["allreduce_ms"]
    assert math.isclose(
        rows[(64, "weak")]["compute_ms"], weak["compute_ms"], rel_tol=1e-12
    )  # weak scaling: the same work per rank


def test_the_16_bit_wire_is_predicted_as_cluster_wire_runs_it(profiled):
    done = scale(profiled, "--ranks", "16", "--link", "8gbit,10us", "--wire", "bfloat16", "--json")
    assert done.returncode == 0, done.stderr
    (table,) = json.loads(done.stdout)["tables"]
    assert table["wire"] == "bfloat16" and table["cast_seconds"] > 0
    gamma, cast = table["reduce_bytes_per_second"], table["cast_seconds"]
    m, alpha, beta = 2 * GRAD_VALUES, 10e-6, 1e-9
    share = 15 / 16 * m
    alltoall = 15 * alpha + share * beta  # pairwise: 15 rounds of m / 16 bytes
    allgather = 4 * alpha + share * beta  # recursive doubling: 16 ranks, under 512 KiB
    reduce = 15 / 16 * 4 * GRAD_VALUES / gamma  # the owner's float32 sum
    flags = 4 * (alpha + 8 * beta + 8 / gamma)
    weak = next(r for r in table["rows"] if r["mode"] == "weak")
    assert weak["algorithm"] == "alltoall + recursive doubling allgather"
    expected = (cast + alltoall + reduce + allgather + flags) * 1e3
    assert weak["allreduce_ms"] == pytest.approx(expected, rel=1e-9)


def test_batch_sets_the_weak_rows_per_rank_batch_and_scales_the_per_sample_part(profiled):
    done = scale(profiled, "--ranks", "16", "--link", "10gbe", "--batch", "96", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    run, (table,) = out["run"], out["tables"]
    weak = next(r for r in table["rows"] if r["mode"] == "weak")
    assert weak["per_rank_batch"] == 96
    per_sample, fixed = run["per_sample_seconds"] * 1e3, run["fixed_seconds"] * 1e3
    assert weak["compute_ms"] == pytest.approx(per_sample * 96 / 24 + fixed, rel=1e-12)
    assert weak["samples_per_second"] == pytest.approx(16 * 96 / weak["step_ms"] * 1e3)


def test_the_tables_name_each_link_and_the_models_assumptions(profiled):
    done = scale(profiled, "--ranks", "8,16", "--link", "10gbe", "--link", "wan")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"mlp: {GRAD_VALUES:,} gradient values, {4 * GRAD_VALUES:,} bytes" in text
    assert "## 10gbe: 10 Gbit/s, 20 us one way" in text and "## wan: 0.1 Gbit/s, 1000 us" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| 16 | weak |")]
    assert len(table_rows) == 2 and all("Rabenseifner" in line for line in table_rows)
    assert "one rank per host" in text


def test_a_run_without_a_profile_or_a_bad_flag_is_one_line(profiled, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.toml").write_text((profiled / "config.toml").read_text())
    for args, expected in [
        ((bare,), "trace.json: not found; expected the run's profile; train with --profile"),
        ((tmp_path / "nothing",), "no config.toml; expected a run directory"),
        ((profiled, "--link", "fast"), "--link 'fast': expected one of 10gbe, 1gbe, wan"),
        ((profiled, "--ranks", "2,x"), "--ranks '2,x': expected world sizes >= 1"),
    ]:
        done = scale(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_trace_that_is_not_one_is_refused(profiled, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text((profiled / "config.toml").read_text())
    (broken / "trace.json").write_text('{"traceEvents": []}')
    done = scale(broken)
    assert done.returncode == 2 and "not a trace of mpinet train --profile" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
