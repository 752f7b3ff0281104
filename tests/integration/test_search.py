"""`mpinet search`: trials drawn from a space, trained in parallel rank groups, ranked."""

import json
import re
from pathlib import Path

import pytest
from support import job_environment, mpinet_command, run_job

pytestmark = pytest.mark.mpi
BASE = ["model.name='mlp'", "train.max_steps=20", "train.plots=false", "data.order='global'"]
SPACE = """
[optim.lr]
log_uniform = [1e-3, 1e-1]
[model.hidden]
choice = [[16], [24, 12]]
"""


def search(tmp_path, mnist_h5, launcher, n, *flags, space=SPACE, settings=BASE):
    (tmp_path / "space.toml").write_text(space)
    command = [
        *mpinet_command(),
        "search",
        "--space",
        str(tmp_path / "space.toml"),
        "--data",
        str(mnist_h5),
        "--search-dir",
        str(tmp_path / "search"),
        *flags,
    ]
    for s in settings:
        command += ["--set", s]
    if n:
        command = [launcher, "-n", str(n), *command]
    return run_job(
        command, timeout=180, env=job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"))
    )


def trials(tmp_path):
    return [json.loads(line) for line in (tmp_path / "search" / "trials.jsonl").open()]


def test_groups_of_two_ranks_train_what_each_trial_trains_alone(tmp_path, mnist_h5, launcher):
    job = search(tmp_path, mnist_h5, launcher, 4, "--trials", "4", "--ranks-per-trial", "2")
    assert job.returncode == 0, job.output
    rows = trials(tmp_path)
    assert [r["trial"] for r in rows] == [0, 1, 2, 3] and all(r["status"] == "ok" for r in rows)
    assert len({r["values"]["optim.lr"] for r in rows}) == 4
    for r in rows:  # each trial's metrics carry its number (a `trial` label)
        assert f"trial = {r['trial']}\n" in (Path(r["run_dir"]) / "config.toml").read_text()
    for r in rows[:2]:  # each trial again, by itself, from the config it recorded
        again = run_job(
            [
                launcher,
                "-n",
                "2",
                *mpinet_command(),
                "train",
                "--config",
                f"{r['run_dir']}/config.toml",
                "--run-dir",
                str(tmp_path / "again" / str(r["trial"])),
            ],
            timeout=120,
            env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
        )
        assert again.returncode == 0, again.output
        found = re.search(r"final parameters sha256=([0-9a-f]{64})", again.stderr)
        assert found.group(1) == r["params_sha256"]  # bitwise: the same world size (2)
    ranked = re.findall(r"^\| (\d) \| (\d) \| (0\.\d{4}) \|", job.stdout, re.M)
    scores = [float(s) for _, _, s in ranked]
    assert len(ranked) == 4 and scores == sorted(scores, reverse=True)
    best = rows[int(ranked[0][1])]
    text = (tmp_path / "search" / "best.toml").read_text()
    assert f"lr = {best['values']['optim.lr']!r}" in text
    assert "trial = -1\n" in text  # a config for `mpinet train`: no trial label
    assert (tmp_path / "search" / "search.png").stat().st_size > 5000


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, mnist_h5, launcher):
    space = "[optim.lr]\nchoice = [1e30, 0.05]\n"
    settings = BASE + ["optim.name='sgd'", "optim.schedule='constant'"]
    job = search(
        tmp_path,
        mnist_h5,
        launcher,
        0,
        "--trials",
        "4",
        "--seed",
        "3",
        space=space,
        settings=settings,
    )
    assert job.returncode == 0, job.output
    rows = trials(tmp_path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("the gradient is not finite" in r["error"] for r in failed)
    assert all(r["values"]["optim.lr"] == 1e30 for r in failed)
    assert any(r["status"] == "ok" for r in rows) and "Traceback" not in job.stderr


def test_successive_halving_keeps_the_better_half(tmp_path, mnist_h5, launcher):
    settings = [s for s in BASE if "max_steps" not in s] + ["train.max_steps=40"]
    job = search(tmp_path, mnist_h5, launcher, 2, "--trials", "4", "--halving", settings=settings)
    assert job.returncode == 0, job.output
    rows = trials(tmp_path)
    steps = sorted(r["steps"] for r in rows)
    assert steps == [10, 10, 20, 40]  # 4 trials at 10 steps, 2 at 20, the best at 40
    best = max(rows, key=lambda r: r["steps"])
    history = [json.loads(line) for line in open(f"{best['run_dir']}/history.jsonl")]
    assert [h["step"] for h in history] == [10, 20, 40]  # one run directory, resumed


def test_a_bad_space_is_one_line(tmp_path, mnist_h5, launcher):
    job = search(tmp_path, mnist_h5, launcher, 0, space="[optim.lr]\nlog_uniform = [0, 1]\n")
    assert job.returncode == 2
    assert (
        "[optim.lr] log_uniform = [0, 1]; expected [low, high] with low < high and low > 0"
        in job.stderr
        and "Traceback" not in job.stderr
    )
    job = search(tmp_path, mnist_h5, launcher, 0, space="[optim.lerning_rate]\nchoice = [1]\n")
    assert job.returncode == 2 and "did you mean optim.lr?" in job.stderr
