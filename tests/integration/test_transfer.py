"""Transfer learning as README promises it, run the way a user types it (`mpinet train
--init-from`, `--set train.freeze=...`, `mpirun -n 2`), on the real MNIST: the new run starts
from the source's weights, frozen parameters (and BatchNorm statistics) stay bitwise, a shape
that differs is one line unless train.init_skip names it, the frozen mask is the same on every
rank, and data.train_limit picks the same subset on every world size."""

import hashlib
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import job_environment, mpinet_job, run_job

SCRIPTS = Path(__file__).parent / "scripts"
NET = ["model.name='mlp'", "model.hidden=[32, 32]", "model.batchnorm=true", "train.plots=false"]
HEAD_LR = 0.001  # Adam's default: one step moves an entry by about lr at most


def trained(tmp_path, mnist_h5, name, *flags, n=0, launcher=None, sets=(), net=NET):
    run_dir = tmp_path / name
    job = mpinet_job(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        *flags,
        n=n,
        launcher=launcher,
        sets=[*net, *sets],
    )
    assert job.returncode == 0, job.output
    return job, run_dir


def latest(run_dir):
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()


def arrays(path):
    """(root attributes, params and state by name, optimizer arrays) of a checkpoint file."""
    with h5py.File(path, "r") as f:
        tensors = {k: f["params"][k][()] for k in f["params"]}
        tensors.update({k: f["state"][k][()] for k in f["state"]})
        optimizer = {k: f["optimizer"][k][()] for k in f["optimizer"]}
        return dict(f.attrs), tensors, optimizer


@pytest.fixture(scope="module")
def source(tmp_path_factory, mnist_h5):
    """A trained MNIST mlp (784-32-32-10 with BatchNorm, 60 steps): its run directory."""
    tmp_path = tmp_path_factory.mktemp("source")
    return trained(tmp_path, mnist_h5, "src", sets=["train.max_steps=60"])[1]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if "ERROR" in line]


def test_init_from_starts_from_the_source_weights(tmp_path, mnist_h5, source):
    freeze = "train.freeze=['affine1', 'bn1', 'affine2', 'bn2']"  # all but the head
    job, run_dir = trained(
        tmp_path, mnist_h5, "new", "--init-from", source, sets=[freeze, "train.max_steps=1"]
    )
    attrs, before, _ = arrays(latest(source))
    attrs, after, optimizer = arrays(latest(run_dir))
    for name in after:
        if name.startswith("affine3"):  # the head: one update away from the source
            change = np.abs(after[name] - before[name])
            assert 0 < change.max() <= 1.01 * HEAD_LR, name
        else:
            assert after[name].tobytes() == before[name].tobytes(), name
    assert attrs["init_from"] == str(latest(source).resolve())
    digest = hashlib.sha256(latest(source).read_bytes()).hexdigest()
    assert attrs["init_from_sha256"] == digest
    assert f"initialised 14 tensors from {latest(source).resolve()} (sha256 {digest[:12]})" in (
        job.stderr
    )
    with h5py.File(latest(run_dir), "r") as f:  # the optimizer started fresh
        assert f["optimizer"].attrs["iter"] == 1
    assert not optimizer["m"][: -(32 * 10 + 10)].any()  # zero state but for the head


@pytest.mark.mpi
def test_frozen_params_stay_bitwise_under_mpirun_while_the_others_move(
    tmp_path, mnist_h5, source, launcher
):
    job, run_dir = trained(
        tmp_path,
        mnist_h5,
        "frozen",
        "--init-from",
        source,
        n=2,
        launcher=launcher,
        sets=["train.freeze=['affine1', 'bn1']", "train.max_steps=30", "train.eval_every=10"],
    )
    _, before, _ = arrays(latest(source))
    _, after, optimizer = arrays(latest(run_dir))
    frozen = ["affine1.W", "affine1.b", "bn1.gamma", "bn1.beta"]
    for name in [*frozen, "bn1.running_mean", "bn1.running_var"]:  # 3 evaluations averaged
        assert after[name].tobytes() == before[name].tobytes(), name
    for name in ["affine2.W", "affine3.W", "bn2.gamma", "bn2.running_mean"]:
        assert not np.array_equal(after[name], before[name]), name
    size = sum(before[name].size for name in frozen)  # the first entries of the flat buffer
    for key in ("m", "v"):
        assert not optimizer[key][:size].any() and optimizer[key][size:].any(), key
    assert f"train.freeze: {', '.join(frozen)} ({size} values) get no update" in job.stderr


@pytest.mark.parametrize("n", [0, 2])
def test_a_shape_that_differs_is_one_line_naming_the_parameter(
    tmp_path, mnist_h5, source, launcher, n
):
    job = mpinet_job(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        tmp_path / "new",
        "--init-from",
        source,
        n=n,
        launcher=launcher,
        sets=[*NET, "model.hidden=[32, 16]"],
    )
    assert job.returncode == 2, job.output
    assert len(error_lines(job.stderr)) == 1, job.stderr
    assert error_lines(job.stderr)[0].endswith(
        f"train.init_from {source}: affine2.W has shape (32, 32) there, (32, 16) here; "
        f"expected the same shape; name it in train.init_skip to initialise it fresh "
        f"(e.g. --set \"train.init_skip=['affine2']\")"
    )
    assert "Traceback" not in job.stderr and not (tmp_path / "new").exists()


def test_init_skip_initialises_the_named_parameters_fresh(tmp_path, mnist_h5, source):
    skip = "train.init_skip=['affine2', 'bn2', 'affine3']"
    job, run_dir = trained(
        tmp_path,
        mnist_h5,
        "new",
        "--init-from",
        source,
        sets=["model.hidden=[32, 16]", skip, "train.max_steps=1"],
    )
    fresh = (
        "affine2.W, affine2.b, bn2.gamma, bn2.beta, affine3.W, affine3.b, "
        "bn2.running_mean, bn2.running_var"
    )
    assert re.search(rf"initialised 6 tensors from \S+ \(sha256 \w+\); fresh: {fresh}", job.stderr)
    _, before, _ = arrays(latest(source))
    _, after, _ = arrays(latest(run_dir))
    assert after["affine3.W"].shape == (16, 10)
    assert np.abs(after["affine1.W"] - before["affine1.W"]).max() <= 1.01 * HEAD_LR


def test_init_from_with_resume_is_one_line(tmp_path, mnist_h5, source):
    job = mpinet_job(
        tmp_path, "train", "--run-dir", source, "--resume", "auto", "--init-from", source
    )
    assert job.returncode == 2, job.output
    assert error_lines(job.stderr) == [error_lines(job.stderr)[0]]
    assert error_lines(job.stderr)[0].endswith(
        f"--init-from {source}: given with --resume auto; expected one of them: a resume "
        f"restores every parameter and the optimizer from the run's own checkpoint; drop "
        f"--init-from, or start a new run (another --run-dir)"
    )


@pytest.mark.mpi
@pytest.mark.parametrize("case", ["same", "differ"])
def test_the_frozen_mask_is_checked_to_be_the_same_on_every_rank(launcher, case):
    command = [launcher, "-n", "2", sys.executable, str(SCRIPTS / "freeze_mask.py"), case]
    job = run_job(command, timeout=60, env=job_environment())
    if case == "same":
        assert job.returncode == 0, job.output
        assert sorted(job.stdout.splitlines()) == [f"rank {r}: 12560 values frozen" for r in (0, 1)]
        return
    assert job.returncode == 2, job.output
    assert error_lines(job.stderr) == [
        error_lines(job.stderr)[0]
    ]  # one line, from rank 0, no MPI Abort
    assert error_lines(job.stderr)[0].endswith(
        "frozen parameters differs across ranks: rank 0 has 2 frozen tensors / 12560 values, "
        "rank 1 has 4 frozen tensors / 12696 values; every rank must build the same network "
        "with the same train.freeze"
    )
    assert "MPI_Abort" not in job.output and "values frozen" not in job.stdout


@pytest.mark.mpi
@pytest.mark.parametrize("order", ["shard", "global"])
def test_train_limit_trains_on_the_same_subset_for_world_size_1_and_2(
    tmp_path, mnist_h5, launcher, order
):
    sets = ["data.train_limit=1000", f"data.order='{order}'", "train.max_steps=2"]
    said = []
    for n in (0, 2):
        job, run_dir = trained(tmp_path, mnist_h5, f"n{n}", n=n, launcher=launcher, sets=sets)
        said.append(re.search(r"data.train_limit: (.*)", job.stderr).group(1))
        steps = re.search(r"(\d+) steps/epoch", job.stderr).group(1)
        assert steps == "10", job.stderr  # 1000 samples, batch 100
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert said[0] == said[1] and said[0].startswith("1000 class-balanced samples"), said


RESNET = [
    "model.name='resnet'",
    "model.channels=[4, 8, 8]",
    "train.batch_size=32",
    "train.plots=false",
]


@pytest.mark.mpi
def test_freezing_a_residual_block_keeps_its_batchnorm_inside_bitwise(tmp_path, mnist_h5, launcher):
    """train.freeze names a block: its convolutions and the BatchNorm layers inside it
    (block1.bn_conv1, ...) get no update and keep their running statistics, on 2 ranks."""
    _, src = trained(tmp_path, mnist_h5, "src", net=RESNET, sets=["train.max_steps=6"])
    frozen = [
        "train.freeze=['conv1', 'bn_conv1', 'block1']",
        "train.max_steps=8",
        "train.eval_every=0",
    ]
    _, new = trained(
        tmp_path,
        mnist_h5,
        "new",
        "--init-from",
        src,
        n=2,
        launcher=launcher,
        net=RESNET,
        sets=frozen,
    )
    _, before, _ = arrays(latest(src))
    _, after, _ = arrays(latest(new))
    kept = [name for name in before if name.split(".")[0] in ("conv1", "bn_conv1", "block1")]
    assert "block1.bn_conv2.running_var" in kept and "block1.conv2.W" in kept
    for name in kept:  # parameters and running statistics, through the final evaluation's mean
        assert after[name].tobytes() == before[name].tobytes(), name
    for name in ["block2.conv1.W", "block2.bn_conv1.gamma", "block2.bn_conv1.running_mean"]:
        assert not np.array_equal(after[name], before[name]), name


def test_freezing_part_of_a_batchnorm_inside_a_block_is_one_line(tmp_path, mnist_h5):
    job = mpinet_job(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        tmp_path / "r",
        sets=[*RESNET, "train.freeze=['block1.bn_conv1.gamma']", "train.max_steps=1"],
    )
    assert job.returncode == 2, job.output
    (line,) = error_lines(job.stderr)
    assert (
        "config key train.freeze: freezes part of BatchNorm block1.bn_conv1; expected a "
        "prefix naming the whole layer (block1.bn_conv1)" in line
    )
    assert "Traceback" not in job.stderr and not (tmp_path / "r").exists()
