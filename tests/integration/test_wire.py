"""`train.allreduce_dtype` as a user sets it: `mpirun -n 2 mpinet train --set
train.allreduce_dtype=bfloat16` trains identical replicas and says so in what it writes; a bad
value is one line; a 16-bit wire follows the float32 trajectory within what rounding allows."""

import json
import re

import pytest
from support import mpinet_job

pytestmark = pytest.mark.mpi
QUICK = ["model.name=mlp", "model.hidden=[32]", "train.plots=false"]


def train(tmp_path, mnist_h5, *settings, n=0, launcher=None, name="run", flags=()):
    """`[mpirun -n N] mpinet train --set ...` (QUICK first) -> (finished job, run directory)."""
    run_dir = tmp_path / name
    args = ["train", "--data", mnist_h5, "--run-dir", run_dir, *flags]
    job = mpinet_job(tmp_path, *args, n=n, launcher=launcher, sets=[*QUICK, *settings])
    return job, run_dir


def test_bfloat16_wire_under_mpirun_trains_identical_replicas(tmp_path, mnist_h5, launcher):
    job, run_dir = train(
        tmp_path,
        mnist_h5,
        "train.allreduce_dtype=bfloat16",
        "train.max_steps=30",
        n=2,
        launcher=launcher,
        flags=["--log-all-ranks"],
    )
    assert job.returncode == 0, job.output
    # Every rank logs its final checksum; finish() has also compared them (assert_same_params).
    sums = re.findall(r"\[rank (\d)/2\] INFO final parameters sha256=(\w+)", job.stderr)
    assert sorted(rank for rank, _ in sums) == ["0", "1"] and len({s for _, s in sums}) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["world_size"] == 2
    assert summary["final_test_accuracy"] > 0.3  # chance is 0.1; measured 0.56
    assert summary["params_sha256"] == sums[0][1]
    assert 'allreduce_dtype = "bfloat16"' in (run_dir / "config.toml").read_text()


def test_an_unknown_allreduce_dtype_is_one_line_and_exit_2(tmp_path, mnist_h5, launcher):
    job, run_dir = train(tmp_path, mnist_h5, "train.allreduce_dtype=int8", n=2, launcher=launcher)
    assert job.returncode == 2, job.output
    lines = job.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "ERROR config key train.allreduce_dtype: got 'int8'; expected one of "
        "'float32', 'bfloat16', 'float16'"
    ), job.stderr
    assert "Traceback" not in job.output and not run_dir.exists()


def losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "steps.jsonl").open()]


@pytest.mark.numerics
@pytest.mark.parametrize("name, bits", [("bfloat16", 8), ("float16", 11)])
def test_a_16_bit_wire_follows_the_float32_trajectory(tmp_path, mnist_h5, name, bits):
    """One rank, 50 Adam steps on the same batches: only the gradient's rounding differs.

    A float of `bits` significant bits rounds each gradient value by at most u = 2^-bits of
    itself. Adam's step m / sqrt(v) then moves by at most 2u of its size (m and sqrt(v) by u
    each, where a value's recent gradients share their sign). At first order, a step that
    moves by 2u of itself changes that step's loss decrease by at most 2u of it, so after T
    steps the loss differs by at most 2u times the decrease so far: tol = 2u (L_1 - L_T).
    That bound adds every error up; rounding errors of random sign mostly cancel.
    """
    steps = ["train.max_steps=50", "train.log_every=1"]
    _, exact = train(tmp_path, mnist_h5, *steps, name="float32")
    _, rounded = train(tmp_path, mnist_h5, *steps, f"train.allreduce_dtype={name}", name=name)
    runs = exact, rounded
    reference, trial = losses(exact), losses(rounded)
    assert len(reference) == len(trial) == 50
    tol = 2 * 2.0**-bits * (reference[0] - reference[-1])
    assert trial[0] == reference[0]  # the first loss comes before any update
    assert abs(trial[-1] - reference[-1]) <= tol, (trial[-1], reference[-1], tol)
    test_losses = [json.loads((d / "summary.json").read_text())["final_test_loss"] for d in runs]
    assert abs(test_losses[1] - test_losses[0]) <= tol, (test_losses, tol)


@pytest.mark.parametrize(
    "setting, found",
    [
        ("train.allreduce_dtype='bfloat16'", "train.allreduce_dtype = 'bfloat16'"),
        ("optim.accumulate=2", "optim.accumulate = 2"),
    ],
)
def test_overlap_with_a_16_bit_wire_or_micro_batches_is_one_line(
    tmp_path, mnist_h5, launcher, setting, found
):
    job, run_dir = train(tmp_path, mnist_h5, "train.overlap=true", setting, n=2, launcher=launcher)
    assert job.returncode == 2, job.output
    lines = job.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"ERROR config key train.overlap: true with {found}; expected "
        f"{found.split(' = ')[0]} = {'float32' if 'dtype' in found else 1!r} with overlap; "
        f"set one of them back"
    ), job.stderr
    assert "Traceback" not in job.output and not run_dir.exists()
