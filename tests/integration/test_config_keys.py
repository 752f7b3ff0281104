"""Every config key of README's table, set the way a user sets it (`mpinet train --set`), and
the outcome README promises for it observed in what the run wrote: the log, steps.jsonl,
history.jsonl, summary.json, the checkpoint.

The equivalence and fault tests (data.order, optim.accumulate, model.sync_bn, train.fail_*,
train.collective_timeout, metrics.*) live with their guarantees: test_training.py,
tests/cluster, test_prometheus.py; docs/promises.md names each.
"""

import json
import math
import re

import h5py
import numpy as np
import pytest
from support import faulty_mpinet_command, job_environment, mpinet_command, mpinet_job, run_job

pytestmark = pytest.mark.mpi
QUICK = ["model.name='mlp'", "model.hidden=[32]", "train.max_steps=20", "train.plots=false"]


def train(tmp_path, mnist_h5, *settings, n=0, launcher=None, name="run", flags=()):
    """`mpinet train --set ...` (QUICK first, `settings` win) -> (job, run directory)."""
    run_dir = tmp_path / name
    args = ["train", "--data", mnist_h5, "--run-dir", run_dir, *flags]
    job = mpinet_job(tmp_path, *args, n=n, launcher=launcher, sets=[*QUICK, *settings])
    assert job.returncode == 0, job.output
    return job, run_dir


def rows(run_dir, name):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def final(run_dir):
    """(root attributes, params by name, optimizer attributes) of the run's last checkpoint."""
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    with h5py.File(run_dir / "checkpoints" / latest, "r") as f:
        params = {k: f["params"][k][()] for k in f["params"]}
        return dict(f.attrs), params, dict(f["optimizer"].attrs)


def parameters(job):
    return int(re.search(r"INFO model \w+ \((\d+) parameters", job.stderr).group(1))


def lrs(run_dir):
    """The learning rate of every step (steps.jsonl with log_every=1)."""
    return [r["lr"] for r in rows(run_dir, "steps.jsonl")]


# -- optim ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_optim_name_is_the_optimizer_that_ran(tmp_path, mnist_h5, name):
    _, run_dir = train(tmp_path, mnist_h5, f"optim.name='{name}'")
    assert final(run_dir)[2]["name"] == name


def test_optim_lr_with_a_constant_schedule(tmp_path, mnist_h5):
    _, run_dir = train(
        tmp_path, mnist_h5, "optim.lr=0.01", "optim.schedule='constant'", "train.log_every=1"
    )
    assert lrs(run_dir) == [0.01] * 20
    assert final(run_dir)[2]["lr"] == 0.01


def test_optim_momentum_is_stored_with_the_optimizer(tmp_path, mnist_h5):
    _, run_dir = train(tmp_path, mnist_h5, "optim.name='momentum'", "optim.momentum=0.5")
    assert final(run_dir)[2]["momentum"] == 0.5


def test_the_step_schedule_decays_by_gamma_every_step_size(tmp_path, mnist_h5):
    _, run_dir = train(
        tmp_path,
        mnist_h5,
        "optim.schedule='step'",
        "optim.step_size=5",
        "optim.gamma=0.5",
        "optim.lr=0.01",
        "train.log_every=1",
    )
    # the row of step s logs the lr its update used: step index s - 1
    assert lrs(run_dir) == [0.01 * 0.5 ** ((s - 1) // 5) for s in range(1, 21)]


def test_the_cosine_schedule_ends_at_min_lr_and_warmup_ramps(tmp_path, mnist_h5):
    _, run_dir = train(
        tmp_path,
        mnist_h5,
        "optim.schedule='cosine'",
        "optim.min_lr=0.0001",
        "optim.warmup_steps=4",
        "optim.lr=0.01",
        "train.log_every=1",
    )
    lr = lrs(run_dir)
    cosine = [1e-4 + 0.5 * (0.01 - 1e-4) * (1 + math.cos(math.pi * s / 20)) for s in range(20)]
    warm = [c * min(1, (s + 1) / 4) for s, c in enumerate(cosine)]  # linear over 4 steps
    assert lr == pytest.approx(warm, rel=1e-12)  # float64 formulas: a few roundings apart
    assert lr[0] == pytest.approx(0.01 / 4, rel=1e-3) and lr[-1] > 1e-4


def test_scale_lr_multiplies_by_the_world_size(tmp_path, mnist_h5, launcher):
    job, run_dir = train(
        tmp_path,
        mnist_h5,
        "optim.scale_lr=true",
        "optim.lr=0.001",
        "optim.schedule='constant'",
        "train.log_every=1",
        n=2,
        launcher=launcher,
    )
    assert "base lr 0.002 (scaled by world size)" in job.stderr
    assert set(lrs(run_dir)) == {0.002}


def test_clip_norm_bounds_every_update(tmp_path, mnist_h5):
    """SGD with lr 1: one step moves the parameters by at most lr * clip_norm (float64)."""
    common = [
        "optim.name='sgd'",
        "optim.lr=1.0",
        "optim.schedule='constant'",
        "optim.clip_norm=0.001",
        "model.dtype='float64'",
        "data.prefetch=false",
    ]
    _, five = train(tmp_path, mnist_h5, *common, "train.max_steps=5", name="five")
    _, six = train(tmp_path, mnist_h5, *common, "train.max_steps=6", name="six")
    a, b = final(five)[1], final(six)[1]
    moved = math.sqrt(sum(float(np.sum((b[k] - a[k]) ** 2)) for k in a))
    assert 0.0009 < moved <= 0.001 * (1 + 1e-9)  # the gradient was clipped to norm 0.001


# -- train ----------------------------------------------------------------------------------


def test_epochs_and_batch_size_set_the_length_of_the_run(tmp_path, mnist_h5):
    job, run_dir = train(
        tmp_path, mnist_h5, "train.max_steps=0", "train.epochs=1", "train.batch_size=200"
    )
    assert "global batch 200 = 1 ranks x 200 samples" in job.stderr
    assert "300 steps/epoch, 300 steps in all" in job.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["epochs"] == 1 and summary["complete"]


def test_seed_decides_the_weights(tmp_path, mnist_h5):
    _, a = train(tmp_path, mnist_h5, "train.seed=3", name="a")
    _, b = train(tmp_path, mnist_h5, "train.seed=3", name="b")
    _, c = train(tmp_path, mnist_h5, "train.seed=4", name="c")
    pa, pb, pc = final(a)[1], final(b)[1], final(c)[1]
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not np.array_equal(pa["affine1.W"], pc["affine1.W"])


def test_log_every_sets_the_progress_lines_and_steps_jsonl(tmp_path, mnist_h5):
    job, run_dir = train(tmp_path, mnist_h5, "train.log_every=5")
    assert [r["step"] for r in rows(run_dir, "steps.jsonl")] == [5, 10, 15, 20]
    assert len(re.findall(r"INFO step=\d+ epoch=[\d.]+ loss=[\d.]+ lr=", job.stderr)) == 4


def test_checkpoint_every_keep_last_and_keep_best(tmp_path, mnist_h5):
    _, run_dir = train(
        tmp_path,
        mnist_h5,
        "train.checkpoint_every=4",
        "train.keep_last=2",
        "train.keep_best=true",
        "train.eval_every=4",
    )
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.h5"))
    best = (run_dir / "checkpoints" / "best").read_text().strip()
    history = rows(run_dir, "history.jsonl")
    best_step = max(history, key=lambda r: r["test_accuracy"])["step"]
    assert best == f"ckpt-{best_step:08d}.h5"
    assert set(names) == {"ckpt-00000016.h5", "ckpt-00000020.h5", best}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_checkpoint"] == str(run_dir / "checkpoints" / best)


def test_check_every_finds_a_replica_that_diverged(tmp_path, mnist_h5, launcher):
    command = [
        launcher,
        "-n",
        "2",
        *faulty_mpinet_command("1:5:diverge"),
        "train",
        "--data",
        str(mnist_h5),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    for s in [*QUICK, "train.check_every=2"]:
        command += ["--set", s]
    job = run_job(command, timeout=120, env=job_environment(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert job.returncode == 2, job.output
    errors = [line for line in job.stderr.splitlines() if "ERROR" in line]
    assert (
        len(errors) == 1
        and "parameter checksum differs across ranks: rank 0 has" in errors[0]
        and "the replicas diverged" in errors[0]
    ), errors
    steps = [r["step"] for r in rows(tmp_path / "run", "steps.jsonl")]
    assert max(steps, default=0) <= 6


def test_blas_threads_sets_every_rank_pool(tmp_path, mnist_h5, launcher):
    job, _ = train(
        tmp_path,
        mnist_h5,
        "train.blas_threads=1",
        n=2,
        launcher=launcher,
        flags=["--log-all-ranks"],
    )
    threads = re.findall(
        r"\[rank (\d)/2\] INFO 2 rank\(s\) .*, (\d+) BLAS thread\(s\) each: "
        r"\[.*?(\d+)\)\]",
        job.stderr,
    )
    assert sorted(threads) == [("0", "1", "1"), ("1", "1", "1")], job.stderr


def test_plots_false_draws_nothing(tmp_path, mnist_h5):
    _, run_dir = train(tmp_path, mnist_h5, "train.plots=false")
    assert not list(run_dir.glob("*.png"))
    assert json.loads((run_dir / "summary.json").read_text())["complete"]


# -- data -----------------------------------------------------------------------------------


def test_normalize_standard_stores_the_pixel_statistics(tmp_path, mnist_h5):
    _, run_dir = train(tmp_path, mnist_h5, "data.normalize='standard'")
    attrs = final(run_dir)[0]
    assert attrs["pixel_mean"] == pytest.approx(0.1307, abs=1e-4)
    assert attrs["pixel_std"] == pytest.approx(0.3081, abs=1e-4)


def test_augment_and_prefetch(tmp_path, mnist_h5):
    """Augmentation changes what is trained on; prefetching changes nothing (bitwise); the
    default, "auto", prefetches augmented batches only."""
    fetched, plain = train(tmp_path, mnist_h5, "data.prefetch=true", name="plain")
    unfetched_job, unfetched = train(tmp_path, mnist_h5, "data.prefetch=false", name="unfetched")
    auto, _ = train(tmp_path, mnist_h5, name="auto")
    shifted_job, shifted = train(
        tmp_path, mnist_h5, "data.augment=true", "data.shift=3", "data.rotate=15.0", name="shifted"
    )
    for job, on in ((fetched, True), (unfetched_job, False), (auto, False), (shifted_job, True)):
        assert f"samples per rank in memory, prefetch {'on' if on else 'off'}" in job.stderr
    a, b, c = final(plain)[1], final(unfetched)[1], final(shifted)[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["affine1.W"], c["affine1.W"])
    assert "shift = 3" in (shifted / "config.toml").read_text()


def test_a_prefetch_value_not_offered_is_one_line(tmp_path, mnist_h5):
    run_dir = tmp_path / "run"
    args = ["train", "--data", mnist_h5, "--run-dir", run_dir]
    job = mpinet_job(tmp_path, *args, sets=["data.prefetch=yes"], timeout=60)
    assert job.returncode == 2 and not run_dir.exists()
    assert job.stderr.strip().endswith(
        "ERROR config key data.prefetch: got 'yes'; expected one of 'auto', true, false"
    )
    assert "Traceback" not in job.stderr


def test_data_source_and_dataset_prepare_the_cache_file(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    command = [*mpinet_command(), "train", "--run-dir", str(run_dir)]
    for s in [*QUICK, "data.dataset='fashion-mnist'", f"data.source={str(shared_data)!r}"]:
        command += ["--set", s]
    job = run_job(command, timeout=120, env=job_environment(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert job.returncode == 0, job.output
    cache = tmp_path / "cache" / "mpinet" / "fashion-mnist.h5"
    assert (
        f"INFO data {cache} (fashion-mnist: 60000 train / 10000 test; prepared from "
        f"{shared_data / 'fashion-mnist'})"
    ) in job.stderr


# -- model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings,count",
    [
        (["model.hidden=[20]"], 784 * 20 + 20 + 20 * 10 + 10),
        (["model.hidden=[20]", "model.batchnorm=true"], 784 * 20 + 20 + 2 * 20 + 20 * 10 + 10),
        (
            [
                "model.name='simple_cnn'",
                "model.filters=4",
                "model.filter_size=3",
                "model.pad=1",
                "model.stride=2",
                "model.hidden=10",
            ],
            4 * 9 + 4 + (4 * 7 * 7) * 10 + 10 + 10 * 10 + 10,
        ),
        (
            ["model.name='deep_cnn'", "model.filters=[2, 2, 2, 2, 2, 2]", "model.hidden=5"],
            (2 * 9 + 2) + 5 * (2 * 2 * 9 + 2) + 2 * 4 * 4 * 5 + 5 + 5 * 10 + 10,
        ),
    ],
)
def test_model_keys_build_the_network_they_say(tmp_path, mnist_h5, settings, count):
    job, run_dir = train(tmp_path, mnist_h5, *settings, "train.max_steps=2")
    assert parameters(job) == count


@pytest.mark.parametrize(
    "key,value,stored",
    [
        ("activation", "'tanh'", "tanh"),
        ("dropout", "0.25", 0.25),
        ("weight_decay", "0.001", 0.001),
        ("init", "'xavier'", "xavier"),
        ("init", "0.05", 0.05),
    ],
)
def test_model_keys_are_the_spec_of_the_checkpoint(tmp_path, mnist_h5, key, value, stored):
    _, run_dir = train(tmp_path, mnist_h5, f"model.{key}={value}", "train.max_steps=2")
    assert json.loads(final(run_dir)[0]["model_spec"])[key] == stored


def test_model_dtype_float64_trains_in_float64(tmp_path, mnist_h5):
    job, run_dir = train(tmp_path, mnist_h5, "model.dtype='float64'", "train.max_steps=2")
    assert "float64), optimizer adam" in job.stderr
    assert final(run_dir)[1]["affine1.W"].dtype == np.float64


def test_log_json_writes_one_object_per_line(tmp_path, mnist_h5):
    job, _ = train(tmp_path, mnist_h5, flags=["--log-json"])
    events = [json.loads(line) for line in job.stderr.splitlines()]
    assert {"time", "level", "rank", "world_size", "logger", "message"} <= set(events[0])
    assert any(e["message"].startswith("done: test accuracy") for e in events)


def test_eval_split_val_scores_the_held_out_images(tmp_path, shared_data):
    from mpinet.data.prepare import prepare

    data = prepare("mnist", source=shared_data / "mnist", out=tmp_path / "val.h5", val=5000)
    _, run_dir = train(tmp_path, data, "data.eval_split='val'")
    assert rows(run_dir, "history.jsonl")[-1]["test_samples"] == 5000  # /val, not /test
