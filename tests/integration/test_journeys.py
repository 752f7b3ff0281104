"""What a new user types, run as they type it: the `mpinet` script (alone and under mpiexec)
in a subprocess, on real files, asserting what README promises happens.

Starting: the config is checked before anything is written, a failed start leaves no run
directory, the data file is named and never created by a typo. Stopping: Ctrl-C, a full
disk. The CLI's own promises: --print-config, "did you mean", no command.
"""

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib

import pytest
from support import descendants, job_environment, mpinet_command, mpinet_job, run_job, stop_job

from mpinet.data.prepare import prepare
from mpinet.worker.config import SECTIONS, load_config, model_spec

pytestmark = pytest.mark.mpi
MLP = ["--set", "model.name='mlp'", "--set", "model.hidden=[32]"]


def mpinet(tmp_path, *args, n=0, launcher=None, timeout=90, cwd=None):
    """Run `mpinet ARGS` (under `mpiexec -n n` when n) with a private cache and data source."""
    return mpinet_job(tmp_path, *args, n=n, launcher=launcher, timeout=timeout, cwd=cwd)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if "ERROR" in line or "error:" in line]


# -- the config is checked before anything is written (item 2) ------------------------------


@pytest.mark.parametrize("n", [0, 2])
@pytest.mark.parametrize(
    "settings,message",
    [
        (
            ["model.name='mlp'", "model.hidden=100"],
            "config key model.hidden: got 100; expected for mlp: a list of layer sizes >= 1, "
            "e.g. [100, 50]",
        ),
        (
            ["model.hidden=[100]"],
            "config key model.hidden: got [100]; expected for simple_cnn: one layer size >= 1, "
            "e.g. 100",
        ),
    ],
)
def test_a_wrong_model_key_is_one_line_before_anything_is_written(
    launcher, mnist_h5, tmp_path, n, settings, message
):
    sets = [a for s in settings for a in ("--set", s)]
    job = mpinet(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        tmp_path / "run",
        *sets,
        n=n,
        launcher=launcher,
    )
    assert job.returncode == 2, job.output
    assert error_lines(job.stderr) == [error_lines(job.stderr)[0]]  # one line, from rank 0
    assert error_lines(job.stderr)[0].endswith(message)
    assert "Traceback" not in job.stderr and "MPI_Abort" not in job.output
    assert not (tmp_path / "run").exists()


def test_an_unknown_key_suggests_the_nearest(mnist_h5, tmp_path):
    job = mpinet(tmp_path, "train", "--data", mnist_h5, "--set", "train.epoch=5")
    assert job.returncode == 2
    assert job.stderr.strip().endswith("did you mean train.epochs?"), job.stderr


def test_print_config_prints_every_key_and_exits(tmp_path):
    job = mpinet(tmp_path, "train", "--print-config", "--set", "model.name='mlp'", cwd=tmp_path)
    assert job.returncode == 0, job.output
    text = job.stdout
    for line in (
        'name = "mlp"',
        "hidden = [100, 100, 100, 100]",
        'activation = "relu"',
        "input_shape = [1, 28, 28]",
        "epochs = 3",
        "batch_size = 100",
        "port = -1",
        f'path = ""  # = {tmp_path / "cache" / "mpinet" / "mnist.h5"}',
    ):
        assert line in text.splitlines(), line
    parsed = tomllib.loads(text)
    assert set(parsed) == {"data", "model", "optim", "train", "metrics"}
    for section, cls in SECTIONS.items():
        if section != "model":
            assert set(parsed[section]) == {f.name for f in dataclasses.fields(cls)}, section
    # the mlp's spec keys, all spelled out, plus dtype and sync_bn
    assert set(parsed["model"]) == set(model_spec(load_config(None, ["model.name='mlp'"]))) | {
        "dtype",
        "sync_bn",
    }
    assert not (tmp_path / "runs").exists()  # nothing written


def test_mpinet_without_a_command_exits_2(tmp_path):
    job = mpinet(tmp_path)
    assert job.returncode == 2
    assert "no command given; expected one of prepare, train, eval" in job.stderr


# -- a failed start leaves no run directory (item 13) ---------------------------------------


def test_failed_starts_leave_no_run_directory(launcher, mnist_h5, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {  # name: (ranks, flags, what the one line says)
            "bad -n": (3, ["--data", mnist_h5], "does not divide over 3 ranks"),
            "busy port": (
                2,
                ["--data", mnist_h5, "--set", f"metrics.port={port}"],
                f"cannot serve on 127.0.0.1:{port}",
            ),
            "missing data": (0, ["--data", tmp_path / "nothing.h5"], "nothing.h5: no such file"),
        }
        for name, (n, args, says) in cases.items():
            job = mpinet(tmp_path, "train", *MLP, *args, n=n, launcher=launcher, cwd=tmp_path)
            assert job.returncode == 2, (name, job.output)
            lines = error_lines(job.stderr)
            assert len(lines) == 1 and says in lines[0], (name, job.stderr)
            assert not (tmp_path / "runs").exists(), name


# -- the data file (items 7, 8, 9) ----------------------------------------------------------


def test_every_run_names_its_data(mnist_h5, tmp_path, shared_data):
    job = mpinet(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        *MLP,
        "--set",
        "train.max_steps=1",
        "--run-dir",
        tmp_path / "a",
    )
    assert job.returncode == 0, job.output
    assert f"INFO data {mnist_h5} (mnist: 60000 train / 10000 test; existing)" in job.stderr
    env_source = job_environment(
        XDG_CACHE_HOME=str(tmp_path / "cache"), MPINET_DATA_SOURCE=str(shared_data)
    )
    fresh = run_job(
        [
            *mpinet_command(),
            "train",
            *MLP,
            "--set",
            "train.max_steps=1",
            "--run-dir",
            str(tmp_path / "b"),
        ],
        timeout=90,
        env=env_source,
    )
    assert fresh.returncode == 0, fresh.output
    cache = tmp_path / "cache" / "mpinet" / "mnist.h5"
    assert (
        f"INFO data {cache} (mnist: 60000 train / 10000 test; prepared from "
        f"{shared_data / 'mnist'})"
    ) in fresh.stderr


@pytest.mark.parametrize("n", [0, 2])
def test_a_mistyped_data_path_is_an_error_never_a_new_file(launcher, tmp_path, shared_data, n):
    env = job_environment(
        XDG_CACHE_HOME=str(tmp_path / "cache"), MPINET_DATA_SOURCE=str(shared_data)
    )
    typo = tmp_path / "fashon.h5"
    command = [
        *mpinet_command(),
        "train",
        "--data",
        str(typo),
        "--run-dir",
        str(tmp_path / "run"),
        *MLP,
    ]
    job = run_job([launcher, "-n", str(n), *command] if n else command, timeout=90, env=env)
    assert job.returncode == 2, job.output
    lines = error_lines(job.stderr)
    assert len(lines) == 1 and lines[0].endswith(
        f"data file {typo}: no such file; expected an HDF5 file made by `mpinet prepare`; run "
        f"`mpinet prepare --dataset mnist --out {typo}`, or leave data.path unset to use the "
        f"cache ({tmp_path / 'cache' / 'mpinet' / 'mnist.h5'})"
    ), lines
    assert not typo.exists() and not (tmp_path / "run").exists()


def test_a_file_of_another_dataset_is_one_line(tmp_path, shared_data):
    fashion = prepare(
        "fashion-mnist", source=shared_data / "fashion-mnist", out=tmp_path / "fashion.h5"
    )
    job = mpinet(tmp_path, "train", "--data", fashion, *MLP)
    assert job.returncode == 2
    assert job.stderr.strip().endswith(
        f"data file {fashion}: holds fashion-mnist; expected mnist (data.dataset); set "
        f"data.dataset=fashion-mnist, or pass a mnist file to --data"
    ), job.stderr


def test_an_unreadable_config_file_is_named(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("[train\nepochs = 3\n")
    job = mpinet(tmp_path, "train", "--config", bad)
    assert job.returncode == 2 and "Traceback" not in job.stderr
    assert re.search(
        rf"config file {re.escape(str(bad))}: not valid TOML \(.*\); expected", job.stderr
    ), job.stderr


# -- a full disk (item 11) ------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 700 kB tmpfs: room for a config and one small checkpoint, not for three."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("FULL-DISK TEST SKIPPED: mounting a tmpfs needs root and mount(8)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"FULL-DISK TEST SKIPPED: mount refused ({done.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("n", [0, 2])
def test_a_full_disk_is_one_line_naming_the_file(launcher, mnist_h5, tmp_path, tiny_disk, n):
    run_dir = tiny_disk / "run"
    job = mpinet(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        *MLP,
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.keep_last=0",
        "--set",
        "train.max_steps=100",
        n=n,
        launcher=launcher,
    )
    assert job.returncode == 2, job.output
    lines = error_lines(job.stderr)
    assert len(lines) == 1, job.stderr
    assert re.search(
        r"run/checkpoints/ckpt-\d{8}\.h5: No space left on device; expected to "
        r"write it; free space on that device, or choose another --run-dir$",
        lines[0],
    ), lines[0]
    assert "Traceback" not in job.stderr and "errno" not in job.stderr
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # nothing half-written left


# -- Ctrl-C (item 12) -----------------------------------------------------------------------


def _start(tmp_path, args, n=0, launcher=None):
    command = [*mpinet_command(), *map(str, args)]
    if n:
        command = [launcher, "-n", str(n), *command]
    env = job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_for(path, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "it never came"
        time.sleep(0.05)


@pytest.mark.parametrize("n", [0, 2])
def test_ctrl_c_checkpoints_and_exits_130_then_resumes(launcher, mnist_h5, tmp_path, n):
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        *MLP,
        "--set",
        "train.epochs=20",
        "--set",
        "train.checkpoint_every=5",
    ]
    proc = _start(tmp_path, args, n, launcher)
    try:
        _wait_for(run_dir / "checkpoints" / "latest", proc)
        proc.send_signal(signal.SIGINT)  # what the terminal sends to mpiexec, or to mpinet
        _, stderr = proc.communicate(timeout=60)
    except BaseException:
        stop_job(proc)
        raise
    assert proc.returncode == 130, stderr
    found = re.search(
        r"stopped by Ctrl-C after step (\d+); checkpoint saved; run again with "
        r"--resume auto$",
        stderr,
        re.M,
    )
    assert found, stderr
    assert "Traceback" not in stderr
    step = int(found.group(1))
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == f"ckpt-{step:08d}.h5"
    again = mpinet(
        tmp_path,
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        "--resume",
        "auto",
        "--set",
        "train.max_steps=" + str(step + 10),
        n=n,
        launcher=launcher,
    )
    assert again.returncode == 0, again.output
    assert f"at step {step}" in again.stderr


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(mnist_h5, tmp_path):
    """deep_cnn, batch 1000: one step takes about a second, so both signals land in it."""
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        mnist_h5,
        "--run-dir",
        run_dir,
        "--set",
        "model.name='deep_cnn'",
        "--set",
        "train.batch_size=1000",
        "--set",
        "train.log_every=1",
    ]
    proc = _start(tmp_path, args)
    try:
        _wait_for(run_dir / "steps.jsonl", proc)
        while not (run_dir / "steps.jsonl").read_text():  # the first step is done
            assert proc.poll() is None
            time.sleep(0.05)
        # ... and its bookkeeping (the steps.jsonl line is fsynced before the signal check):
        # both signals must land inside the second step
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    except BaseException:
        stop_job(proc)
        raise
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert error_lines(stderr)[-1].endswith(
        "interrupted: stopped at once, the last checkpoint is intact; run again with --resume auto"
    ), stderr
    assert not descendants(proc.pid)


# -- the commands themselves ----------------------------------------------------------------


def test_version_and_help_list_every_command(tmp_path):
    from importlib.metadata import version

    job = mpinet(tmp_path, "--version")
    assert job.returncode == 0 and job.stdout.strip() == f"mpinet {version('mpinet')}"
    job = mpinet(tmp_path, "--help")
    assert job.returncode == 0
    for command in ("prepare", "train", "eval", "predict", "serve", "plot"):
        assert re.search(rf"^\s+{command}\s+\S", job.stdout, re.M), command


def test_the_main_job_as_readme_types_it(launcher, tmp_path, shared_data):
    """`mpirun -n 4 mpinet train` (shortened by one --set): the default SimpleConvNet, a run
    directory under runs/, the `done: test accuracy` line."""
    env = job_environment(
        XDG_CACHE_HOME=str(tmp_path / "cache"), MPINET_DATA_SOURCE=str(shared_data)
    )
    job = run_job(
        [launcher, "-n", "4", *mpinet_command(), "train", "--set", "train.max_steps=30"],
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert job.returncode == 0, job.output
    assert "INFO model simple_cnn (" in job.stderr and "4 rank(s)" in job.stderr
    done = re.search(
        r"done: test accuracy (0\.\d{4}) \(best 0\.\d{4}\) after 30 steps in "
        r"[\d.]+ s; (runs/\d{8}-\d{6})$",
        job.stderr,
        re.M,
    )
    assert done and float(done.group(1)) > 0.5, job.stderr
    run_dir = tmp_path / done.group(2)
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.toml",
        "history.jsonl",
        "steps.jsonl",
        "summary.json",
        "checkpoints",
    }


def test_prepare_fashion_with_a_validation_split(tmp_path, shared_data):
    out = tmp_path / "fashion.h5"
    job = mpinet(
        tmp_path,
        "prepare",
        "--dataset",
        "fashion-mnist",
        "--source",
        shared_data,
        "--val",
        "5000",
        "--out",
        out,
    )
    assert job.returncode == 0, job.output
    assert job.stdout.startswith(f"wrote {out}: fashion-mnist train 55000, test 10000, val 5000")
    again = mpinet(
        tmp_path,
        "prepare",
        "--dataset",
        "fashion-mnist",
        "--source",
        shared_data,
        "--val",
        "5000",
        "--out",
        out,
        "--force",
    )
    assert again.returncode == 0 and again.stdout.startswith(f"wrote {out}")
