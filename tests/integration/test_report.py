"""`mpinet report RUN_DIR`: the record of a run, and its verify command really verifying."""

import json
import re

import h5py
import pytest
from support import job_environment, mpinet_command, run_job

pytestmark = pytest.mark.mpi
RUN = [
    "model.name='mlp'",
    "model.hidden=[32]",
    "train.max_steps=30",
    "train.checkpoint_every=10",
    "train.keep_last=0",
    "train.plots=false",
    "model.dropout=0.2",
]


@pytest.fixture(scope="module")
def run(launcher, mnist_h5, tmp_path_factory):
    """A 2-rank run of 30 steps, checkpoints every 10, resumed once (two legs)."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    env = job_environment(XDG_CACHE_HOME=str(run_dir.parent / "cache"))
    for settings, resume in ((RUN + ["train.stop_after=20"], []), (RUN, ["--resume", "auto"])):
        command = [
            launcher,
            "-n",
            "2",
            *mpinet_command(),
            "train",
            "--data",
            str(mnist_h5),
            "--run-dir",
            str(run_dir),
            *resume,
        ]
        for s in settings:
            command += ["--set", s]
        job = run_job(command, timeout=120, env=env)
        assert job.returncode == 0, job.output
    return run_dir, env


def report(run_dir, *flags):
    job = run_job([*mpinet_command(), "report", str(run_dir), *flags], timeout=60)
    assert job.returncode == 0, job.output
    return job.stdout


def test_stop_after_stops_without_changing_the_schedule(run):
    run_dir, _ = run
    legs = [json.loads(line) for line in (run_dir / "environment.jsonl").open()]
    assert [leg["step"] for leg in legs] == [0, 20]  # the second leg resumed at 20
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["complete"] and summary["world_sizes"] == [2, 2]


def test_the_report_names_what_reproducing_needs(run, mnist_h5):
    run_dir, _ = run
    text = report(run_dir)
    for heading in (
        "## Result",
        "## Legs",
        "## Software and machine",
        "## Data",
        "## Seeds",
        "## Checkpoints",
        "## Verify",
        "## Config",
    ):
        assert heading in text.splitlines(), heading
    data = json.loads(report(run_dir, "--json"))
    assert [leg["world_size"] for leg in data["legs"]] == [2, 2]
    assert data["legs"][0]["command"].startswith(f"mpinet train --data {mnist_h5}")
    assert re.fullmatch(r"MPICH.*|Open MPI.*", data["legs"][0]["mpi"])
    assert data["legs"][0]["blas"][0]["architecture"] and data["legs"][0]["cpu"]["flags"]
    with h5py.File(mnist_h5, "r") as f:
        assert data["data"]["fingerprint"] == f.attrs["fingerprint"]
    assert [c["step"] for c in data["checkpoints"]] == [10, 20, 30]
    assert data["summary"]["final_test_accuracy"] > 0.5


def test_the_verify_command_reproduces_the_first_checkpoint(run, launcher):
    run_dir, env = run
    verify = json.loads(report(run_dir, "--json"))["verify"]
    assert verify["step"] == 10 and verify["argv"][:3] == ["mpirun", "-n", "2"]
    argv = [launcher, *verify["argv"][1:3], *mpinet_command(), *verify["argv"][4:]]
    job = run_job(argv, timeout=120, env=env)  # as printed, with this machine's launcher
    assert job.returncode == 0, job.output
    found = re.search(r"final parameters sha256=([0-9a-f]{64})", job.stderr)
    assert found and found.group(1) == verify["expected_params_sha256"]


def test_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    job = run_job([*mpinet_command(), "report", str(tmp_path)], timeout=60)
    assert job.returncode == 2
    assert job.stderr.strip() == (
        f"mpinet report: error: {tmp_path}: no config.toml; expected "
        f"a run directory; pass one that `mpinet train --run-dir` "
        f"wrote"
    )
