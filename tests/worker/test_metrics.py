"""Metrics: a real HTTP endpoint per rank, scraped while (and after) steps are observed."""

import re
import socket
import subprocess
import time
import urllib.request

import pytest
from support import free_ports, job_environment, mpiexec, mpinet_command, stop_job

from mpinet.cluster import local
from mpinet.worker.config import load_config
from mpinet.worker.metrics import Metrics


def scrape(port, host="127.0.0.1"):
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(text, name, **labels):
    """The value of the one sample `name{labels...}` in a scrape, or None."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_rank_serves_its_metrics_over_http():
    cfg = load_config(None, ["metrics.port=0", "metrics.job='unit'"])
    metrics = Metrics(cfg, local())
    try:
        times = {
            "data": 0.001,
            "forward": 0.01,
            "backward": 0.02,
            "allreduce": 0.0,
            "optimizer": 0.001,
        }
        metrics.observe_step(1, 0, 2.5, 100, times, 0.001)
        metrics.observe_step(2, 0, 2.0, 100, times, 0.001)
        metrics.observe_eval(
            {"train_accuracy": 0.5, "train_loss": 2.0, "test_accuracy": 0.6, "test_loss": 1.9}
        )
        text = scrape(metrics.port)
    finally:
        metrics.close({})
    assert value(text, "mpinet_train_samples_total", rank="0", job="unit") == 200
    assert value(text, "mpinet_train_steps_total") == 2
    assert value(text, "mpinet_train_loss") == 2.0
    assert value(text, "mpinet_eval_accuracy", split="test") == 0.6
    assert value(text, "mpinet_step_phase_duration_seconds_count", phase="backward") == 2
    assert value(text, "mpinet_world_size") == 1
    assert time.time() - value(text, "mpinet_last_step_timestamp_seconds") < 60
    assert 'mpinet_run_info{job="unit",model="simple_cnn"' in text.replace('rank="0",', "")


def test_a_search_trial_labels_every_metric_with_its_number():
    metrics = Metrics(load_config(None, ["metrics.port=0", "metrics.trial=7"]), local())
    try:
        metrics.observe_step(1, 0, 2.5, 100, {"data": 0.0, "forward": 0.01}, 0.001)
        text = scrape(metrics.port)
    finally:
        metrics.close({})
    samples = [line for line in text.splitlines() if line.startswith("mpinet_")]
    assert samples and all('trial="7"' in line for line in samples)
    assert value(text, "mpinet_train_samples_total", rank="0", trial="7") == 100


def test_a_busy_port_is_a_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = load_config(None, [f"metrics.port={port}"])
        with pytest.raises(OSError, match=f"metrics: cannot serve on 127.0.0.1:{port}"):
            Metrics(cfg, local())


def test_no_gauge_reads_zero_before_it_has_a_value():
    """An alert such as "mpinet_eval_accuracy < 0.9" must not fire before any evaluation:
    the gauges without a value are absent from the scrape, then appear once set."""
    metrics = Metrics(load_config(None, ["metrics.port=0"]), local())
    try:
        before = scrape(metrics.port)
        metrics.observe_eval(
            {"train_accuracy": 0.5, "train_loss": 2.0, "test_accuracy": 0.6, "test_loss": 1.9}
        )
        after = scrape(metrics.port)
    finally:
        metrics.close({})
    for name, labels in [
        ("mpinet_eval_accuracy", {"split": "test"}),
        ("mpinet_eval_loss", {"split": "train"}),
        ("mpinet_train_loss", {}),
        ("mpinet_train_accuracy", {}),
        ("mpinet_learning_rate", {}),
        ("mpinet_last_checkpoint_timestamp_seconds", {}),
    ]:
        assert value(before, name, **labels) is None, name
    assert value(after, "mpinet_eval_accuracy", split="test") == 0.6
    assert value(before, "mpinet_step") == 0 and value(before, "mpinet_epoch") == 0


def test_metrics_off_by_default():
    assert Metrics(load_config(), local()).port is None


@pytest.mark.mpi
def test_every_rank_of_a_job_is_scraped(mnist_h5, tmp_path):
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("MPI TESTS SKIPPED: no mpiexec")
    base = free_ports(2)
    command = [
        launcher,
        "-n",
        "2",
        *mpinet_command(),
        "train",
        "--data",
        str(mnist_h5),
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "model.name='mlp'",
        "--set",
        f"metrics.port={base}",
        "--set",
        "train.epochs=50",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path / "cache")),
    )
    try:
        seen = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 2:
            for rank in (0, 1):
                try:
                    text = scrape(base + rank)
                except OSError:
                    continue
                steps = value(text, "mpinet_train_steps_total", rank=str(rank))
                if steps and steps >= 5:
                    seen[rank] = (text, steps)
            time.sleep(0.2)
        assert set(seen) == {0, 1}, f"scraped ranks {sorted(seen)}"
        first = {rank: steps for rank, (_, steps) in seen.items()}
        time.sleep(1.0)
        later = value(scrape(base), "mpinet_train_samples_total", rank="0")
        assert later > first[0] * 100 * 0.99  # the counter keeps increasing
        for rank, (text, _) in seen.items():
            assert value(text, "mpinet_world_size", rank=str(rank)) == 2
            assert value(text, "mpinet_allreduce_bytes_total", rank=str(rank)) > 0
            # One epoch convention: completed epochs, step / steps per epoch (600 here).
            step = value(text, "mpinet_step", rank=str(rank))
            assert value(text, "mpinet_epoch", rank=str(rank)) == pytest.approx(step / 600)
    finally:
        _, stderr = stop_job(proc)
    assert proc.returncode is not None
    # Rank 0 logs every rank's URL at INFO (the other ranks log only warnings).
    urls = re.search(r"INFO metrics: (.*)$", stderr, re.M)
    assert urls, stderr
    assert urls.group(1) == (
        f"http://127.0.0.1:{base}/metrics (rank 0), http://127.0.0.1:{base + 1}/metrics (rank 1)"
    )
