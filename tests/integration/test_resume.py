"""Resume and pre-emption: a stopped run continues to the very bits of an unstopped one."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from numerics import trajectory_tolerance
from support import (
    descendants,
    faulty_mpinet_command,
    job_environment,
    mpinet_command,
    run_job,
    stop_job,
)

pytestmark = [pytest.mark.mpi, pytest.mark.numerics]

RUN = [
    "model.name='mlp'",
    "model.hidden=[32]",
    "model.dropout=0.2",
    "train.batch_size=500",
    "train.epochs=2",
    "train.checkpoint_every=7",
    "train.keep_last=0",
    "optim.name='adam'",
]


def command(launcher, n, mnist_h5, run_dir, settings, resume=None, fault=None):
    mpinet = faulty_mpinet_command(fault) if fault else mpinet_command()
    cmd = [*mpinet, "train", "--data", str(mnist_h5), "--run-dir", str(run_dir)]
    for s in settings:
        cmd += ["--set", s]
    if resume:
        cmd += ["--resume", resume]
    return [launcher, "-n", str(n), *cmd] if n else cmd


def final_arrays(run_dir):
    """Every array of the last checkpoint: parameters, BatchNorm state, optimizer state."""
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    arrays = {}
    with h5py.File(run_dir / "checkpoints" / latest, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        step = int(f.attrs["step"])
    return step, arrays


def assert_bitwise_equal(a, b):
    assert a[0] == b[0], f"steps differ: {a[0]} vs {b[0]}"
    assert sorted(a[1]) == sorted(b[1])
    for name in a[1]:
        assert np.array_equal(a[1][name], b[1][name]), f"{name} differs"


@pytest.fixture(scope="module")
def straight(launcher, mnist_h5, tmp_path_factory):
    """The reference: 2 ranks, 2 epochs without a stop."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    job = run_job(
        command(launcher, 2, mnist_h5, run_dir, RUN),
        timeout=120,
        env=job_environment(XDG_CACHE_HOME=str(run_dir.parent)),
    )
    assert job.returncode == 0, job.output
    return run_dir


def test_a_killed_run_resumes_bitwise(launcher, mnist_h5, tmp_path, straight):
    run_dir = tmp_path / "run"
    env = job_environment(XDG_CACHE_HOME=str(tmp_path))
    crash = command(launcher, 2, mnist_h5, run_dir, RUN, fault="1:52:kill")
    job = run_job(crash, timeout=120, env=env)
    assert job.returncode != 0
    assert final_arrays(run_dir)[0] == 49  # the last checkpoint before the crash
    job = run_job(command(launcher, 2, mnist_h5, run_dir, RUN, resume="auto"), timeout=120, env=env)
    assert job.returncode == 0, job.output
    assert "resumed from" in job.stderr and "at step 49" in job.stderr
    assert_bitwise_equal(final_arrays(run_dir), final_arrays(straight))
    history = [json.loads(line) for line in (run_dir / "history.jsonl").open()]
    assert [h["step"] for h in history] == [120, 240]
    reference = [json.loads(line) for line in (straight / "history.jsonl").open()]
    assert history[-1]["test_accuracy"] == reference[-1]["test_accuracy"]


def _preempt(launcher, n, mnist_h5, run_dir, settings, sig, env):
    """Start a run, signal one rank once it checkpointed, and return the finished job."""
    proc = subprocess.Popen(
        command(launcher, n, mnist_h5, run_dir, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "checkpoints" / "latest").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint came"
            time.sleep(0.05)
        ranks = [p for p in descendants(proc.pid) if _is_python(p)]
        assert ranks, "no rank process found"
        started = time.monotonic()
        os.kill(ranks[-1], sig)  # one rank only: every rank must stop with it
        _, stderr = proc.communicate(timeout=60)
    except BaseException:
        stop_job(proc)
        raise
    return proc.returncode, stderr, time.monotonic() - started


def _is_python(pid):
    """A rank: runs the mpinet script, and is not mpiexec or Hydra's proxy."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"mpinet" in b" ".join(argv) and not any(
        b"hydra" in a or b"mpiexec" in a for a in argv[:1]
    )


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_on_one_rank_checkpoints_and_exits_75(launcher, mnist_h5, tmp_path, straight, sig):
    run_dir = tmp_path / "run"
    env = job_environment(XDG_CACHE_HOME=str(tmp_path))
    slow = RUN + ["train.epochs=2"]
    code, stderr, seconds = _preempt(launcher, 2, mnist_h5, run_dir, slow, sig, env)
    assert code == 75, stderr
    name = "SIGUSR1" if sig == signal.SIGUSR1 else "SIGTERM"
    assert (
        f"stopped by {name} after step" in stderr
        and "checkpoint saved; run again with --resume auto" in stderr
        and seconds < 30
    ), stderr
    step, _ = final_arrays(run_dir)
    assert 0 < step < 240
    job = run_job(command(launcher, 2, mnist_h5, run_dir, RUN, resume="auto"), timeout=120, env=env)
    assert job.returncode == 0, job.output
    assert_bitwise_equal(final_arrays(run_dir), final_arrays(straight))


def test_resume_on_another_world_size_in_global_order(launcher, mnist_h5, tmp_path):
    # float64: another world size sums in another order (tests/numerics.py)
    settings = [s for s in RUN if "dropout" not in s] + [
        "data.order='global'",
        "model.dtype='float64'",
    ]
    env = job_environment(XDG_CACHE_HOME=str(tmp_path))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    job = run_job(command(launcher, 2, mnist_h5, ref_dir, settings), timeout=120, env=env)
    assert job.returncode == 0, job.output
    crash = command(launcher, 2, mnist_h5, run_dir, settings, fault="0:30:raise")
    assert run_job(crash, timeout=120, env=env).returncode != 0
    job = run_job(
        command(launcher, 4, mnist_h5, run_dir, settings, resume="auto"), timeout=120, env=env
    )
    assert job.returncode == 0, job.output
    assert "saved by 2 rank(s)" in job.stderr
    (step_a, a), (step_b, b) = final_arrays(run_dir), final_arrays(ref_dir)
    assert step_a == step_b == 240
    for name in a:
        if name.startswith("params/"):
            scale = np.abs(b[name]).max() or 1
            assert np.abs(a[name] - b[name]).max() / scale < trajectory_tolerance(240), name


def test_resume_rejects_a_corrupt_checkpoint_path(launcher, mnist_h5, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    job = run_job(
        command(None, 0, mnist_h5, tmp_path / "run", RUN, resume=str(bad)),
        timeout=60,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 2
    lines = [line for line in job.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and f"checkpoint {bad}: not a readable HDF5 file" in lines[0], lines
    assert "Traceback" not in job.stderr and not (tmp_path / "run").exists()


# -- resume is "the same command" ------------------------------------------------------------


@pytest.fixture(scope="module")
def crashed(launcher, mnist_h5, tmp_path_factory):
    """A 2-rank run SIGKILLed at step 52: its last checkpoint is step 49 (a read-only source)."""
    run_dir = tmp_path_factory.mktemp("crashed") / "run"
    job = run_job(
        command(launcher, 2, mnist_h5, run_dir, RUN, fault="1:52:kill"),
        timeout=120,
        env=job_environment(XDG_CACHE_HOME=str(run_dir.parent)),
    )
    assert job.returncode != 0
    assert final_arrays(run_dir)[0] == 49
    return run_dir


def snapshot(run_dir):
    """Every file of a run directory with its bytes: to show that nothing changed."""
    return {
        p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("into", ["same", "new"])
def test_resume_from_a_checkpoint_file_is_bitwise(
    launcher, mnist_h5, tmp_path, crashed, straight, into
):
    """README's own example, `--resume RUN/checkpoints/ckpt-00000049.h5`, into the run's own
    directory or a new one; the flags are not repeated: the run's config is the base."""
    run_dir = tmp_path / "run"
    shutil.copytree(crashed, run_dir)
    target = run_dir if into == "same" else tmp_path / "new"
    job = run_job(
        [
            launcher,
            "-n",
            "2",
            *mpinet_command(),
            "train",
            "--data",
            str(mnist_h5),
            "--run-dir",
            str(target),
            "--resume",
            str(run_dir / "checkpoints" / "ckpt-00000049.h5"),
        ],
        timeout=120,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 0, job.output
    assert "at step 49" in job.stderr
    assert_bitwise_equal(final_arrays(target), final_arrays(straight))
    history = [json.loads(line) for line in (target / "history.jsonl").open()]
    assert [h["step"] for h in history] == [120, 240]
    summary = json.loads((target / "summary.json").read_text())
    assert summary["world_sizes"] == [2, 2] and summary["complete"] is True
    assert summary["final_checkpoint"] == str(target / "checkpoints" / "ckpt-00000240.h5")


def test_resume_auto_needs_only_the_run_dir(launcher, mnist_h5, tmp_path, crashed, straight):
    run_dir = tmp_path / "run"
    shutil.copytree(crashed, run_dir)
    job = run_job(
        [
            launcher,
            "-n",
            "2",
            *mpinet_command(),
            "train",
            "--data",
            str(mnist_h5),
            "--run-dir",
            str(run_dir),
            "--resume",
            "auto",
        ],
        timeout=120,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 0, job.output
    assert_bitwise_equal(final_arrays(run_dir), final_arrays(straight))
    assert "INFO model mlp (" in job.stderr  # not the default simple_cnn


def test_a_refused_resume_changes_nothing(launcher, mnist_h5, tmp_path, crashed):
    run_dir = tmp_path / "run"
    shutil.copytree(crashed, run_dir)
    before = snapshot(run_dir)
    job = run_job(
        command(None, 0, mnist_h5, run_dir, ["model.hidden=[64]"], resume="auto"),
        timeout=60,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 2
    lines = [line for line in job.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"config key model.hidden: [64] on resume, the run has [32] (checkpoint "
        f"{run_dir}/checkpoints/ckpt-00000049.h5); expected it unchanged: it alters the "
        f"model; start a new run with another --run-dir"
    ), lines
    assert snapshot(run_dir) == before


def test_resuming_a_finished_run_says_so_and_rewrites_nothing(
    launcher, mnist_h5, tmp_path, straight
):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    before = snapshot(run_dir)
    job = run_job(
        command(None, 0, mnist_h5, run_dir, [], resume="auto"),
        timeout=60,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 0, job.output
    assert (
        "run already complete at step 240 (train.epochs=2); raise train.epochs to continue"
    ) in job.stderr
    assert snapshot(run_dir) == before


def test_extending_a_run_recomputes_the_schedule_and_counts_the_whole_run(
    launcher, mnist_h5, tmp_path, straight
):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    first = json.loads((run_dir / "summary.json").read_text())
    job = run_job(
        command(None, 0, mnist_h5, run_dir, ["train.epochs=3"], resume="auto"),
        timeout=120,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert job.returncode == 0, job.output
    found = re.search(
        r"run length 240 -> 360 steps; the cosine schedule is recomputed over "
        r"the new length: lr at step 240 (\S+) -> (\S+)$",
        job.stderr,
        re.M,
    )
    assert found and float(found.group(1)) == 0 and float(found.group(2)) > 0, job.stderr
    assert re.search(r"base lr 0.001, lr 0.00025 at step 240 \(cosine schedule\)", job.stderr)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 360 and summary["epochs"] == 3 and summary["complete"]
    assert summary["world_sizes"] == [2, 1]
    assert summary["wall_seconds"] > first["wall_seconds"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").open()]
    assert [h["step"] for h in history] == [120, 240, 360]
    assert history[-1]["elapsed_seconds"] > history[1]["elapsed_seconds"]


def test_after_a_preemption_the_summary_says_so_then_counts_the_whole_run(
    launcher, mnist_h5, tmp_path
):
    run_dir = tmp_path / "run"
    env = job_environment(XDG_CACHE_HOME=str(tmp_path))
    code, _, _ = _preempt(launcher, 2, mnist_h5, run_dir, RUN, signal.SIGTERM, env)
    assert code == 75
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["preempted"] is True and stopped["complete"] is False
    assert stopped["stopped_by"] == "SIGTERM" and stopped["exit_code"] == 75
    job = run_job(command(launcher, 2, mnist_h5, run_dir, RUN, resume="auto"), timeout=120, env=env)
    assert job.returncode == 0, job.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is True and summary["preempted"] is False
    assert summary["model"] == "mlp" and summary["dataset"] == "mnist"
    assert summary["data"] == str(mnist_h5) and summary["world_sizes"] == [2, 2]
    assert summary["wall_seconds"] > stopped["wall_seconds"]


def test_samples_per_second_after_a_resume_count_only_time_and_samples_alike(
    launcher, mnist_h5, tmp_path
):
    """Killed at step 118, resumed from 112: the evaluation at 120 covers 120 steps of
    samples, 112 of them from before the crash. Counting those over the resumed leg's 8
    steps of time (the old bug) made it 15x the steady rate of the next evaluation."""
    run_dir = tmp_path / "run"
    env = job_environment(XDG_CACHE_HOME=str(tmp_path))
    crash = command(launcher, 2, mnist_h5, run_dir, RUN, fault="0:118:kill")
    assert run_job(crash, timeout=120, env=env).returncode != 0
    assert final_arrays(run_dir)[0] == 112
    job = run_job(command(launcher, 2, mnist_h5, run_dir, RUN, resume="auto"), timeout=120, env=env)
    assert job.returncode == 0, job.output
    first, second = [
        json.loads(line)["samples_per_second"] for line in (run_dir / "history.jsonl").open()
    ]
    assert first < 5 * second, (first, second)  # the same work and machine: about equal
