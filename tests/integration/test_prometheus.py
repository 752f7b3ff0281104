"""A real Prometheus and Pushgateway (the Debian packages) against real mpinet jobs.

Prometheus runs with a config generated from deploy/prometheus.yml (scrape interval 1 s)
and the targets file deploy/targets.py writes; the test asks its HTTP API for the series.
Every wait is bounded and every process is stopped, also when an assertion fails.
"""

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from support import REPO, free_ports, job_environment, mpiexec, mpinet_command, run_job, stop_job

from mpinet.worker.push import push_summary

DEPLOY = REPO / "deploy"
pytestmark = pytest.mark.slow


def binary(name):
    found = shutil.which(name)
    if found is None:
        pytest.skip(
            f"PROMETHEUS TESTS SKIPPED: `{name}` is not on PATH; install the Debian "
            f"packages: apt-get install -y prometheus prometheus-pushgateway"
        )
    return found


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(what, check, timeout, interval=0.25):
    """Poll check() until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def start(command, log):
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def prometheus_config(tmp, base_port, ranks, pushgateway_port):
    """deploy/prometheus.yml with a 1 s interval, this test's targets and Pushgateway."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "alerts.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = tmp / "targets"
    targets.mkdir()
    jobs["mpinet"]["file_sd_configs"][0].update(
        files=[str(targets / "*.json")], refresh_interval="1s"
    )
    jobs["pushgateway"]["static_configs"] = [{"targets": [f"127.0.0.1:{pushgateway_port}"]}]
    written = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "targets.py"),
            "127.0.0.1",
            "--ranks-per-host",
            str(ranks),
            "--base-port",
            str(base_port),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    (targets / "job.json").write_text(written.stdout)
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclasses.dataclass
class Servers:
    prometheus: str
    pushgateway: str
    base_port: int


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    prometheus, pushgateway = binary("prometheus"), binary("prometheus-pushgateway")
    tmp = tmp_path_factory.mktemp("prometheus")
    base, prom_port, gw_port = free_ports(2), free_ports(1), free_ports(1)
    config = prometheus_config(tmp, base, 2, gw_port)
    procs = []
    with open(tmp / "servers.log", "w") as log:
        try:
            procs.append(start([pushgateway, f"--web.listen-address=127.0.0.1:{gw_port}"], log))
            procs.append(
                start(
                    [
                        prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    log,
                )
            )
            servers = Servers(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{gw_port}", base)
            for url in (servers.prometheus, servers.pushgateway):
                wait_for(f"{url}/-/ready", lambda u=url: get(f"{u}/-/ready"), timeout=30)
            yield servers
        finally:
            for proc in procs:
                stop(proc)


def query(prometheus, expr):
    """Prometheus' instant query API -> {rank: value} of the result's series."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = json.loads(get(url))
    assert answer["status"] == "success", answer
    return {r["metric"].get("rank"): float(r["value"][1]) for r in answer["data"]["result"]}


@pytest.mark.mpi
def test_prometheus_scrapes_every_rank_of_an_mpirun_job(servers, mnist_h5, tmp_path):
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("MPI TESTS SKIPPED: no mpiexec")
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
        f"metrics.port={servers.base_port}",
        "--set",
        "metrics.job='scraped'",
        "--set",
        "train.epochs=50",
    ]  # lasts far longer than the test: stopped below
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=job_environment(XDG_CACHE_HOME=str(tmp_path)),
    )
    samples = 'mpinet_train_samples_total{job="scraped"}'
    try:
        first = wait_for(
            "both ranks' samples in Prometheus",
            lambda: (
                lambda found: (
                    found if set(found) == {"0", "1"} and min(found.values()) > 0 else None
                )
            )(query(servers.prometheus, samples)),
            timeout=45,
        )
        wait_for(
            "the samples counter to increase",
            lambda: query(servers.prometheus, samples).get("0", 0) > first["0"],
            timeout=15,
        )
        for name in (
            "mpinet_world_size",
            "mpinet_last_step_timestamp_seconds",
            "mpinet_step_phase_duration_seconds_count",
            "mpinet_collective_wait_seconds_total",
        ):
            assert set(query(servers.prometheus, f'{name}{{job="scraped"}}')) == {"0", "1"}, name
        assert query(servers.prometheus, 'count(up{job="mpinet"} == 1)') == {None: 2.0}
    finally:
        output, _ = stop_job(proc)
    assert proc.returncode is not None, output


def test_the_final_summary_reaches_the_pushgateway_and_prometheus(servers):
    summary = {
        "final_test_accuracy": 0.97,
        "best_test_accuracy": 0.975,
        "steps": 600,
        "final_test_loss": None,
        "world_size": 2,
        "wall_seconds": 12.5,
    }
    push_summary(servers.pushgateway, "pushed", "run-1", summary)
    text = get(f"{servers.pushgateway}/metrics")
    line = 'mpinet_summary_test_accuracy{instance="",job="pushed",run="run-1"} 0.97'
    assert line in text
    pushed = [row for row in text.splitlines() if 'job="pushed"' in row]
    assert not [row for row in pushed if "mpinet_summary_test_loss" in row]  # None: left out
    found = wait_for(
        "the pushed summary in Prometheus",
        lambda: query(servers.prometheus, 'mpinet_summary_steps{job="pushed",run="run-1"}'),
        timeout=15,
    )
    assert list(found.values()) == [600.0]


def test_a_finished_training_run_pushes_its_summary(servers, mnist_h5, tmp_path):
    run_dir = tmp_path / "pushing-run"
    command = [
        *mpinet_command(),
        "train",
        "--data",
        str(mnist_h5),
        "--run-dir",
        str(run_dir),
        "--set",
        "model.name='mlp'",
        "--set",
        "train.max_steps=20",
        "--set",
        "metrics.job='pushjob'",
        "--set",
        f"metrics.pushgateway='{servers.pushgateway}'",
    ]
    job = run_job(command, timeout=60, env=job_environment(XDG_CACHE_HOME=str(tmp_path)))
    assert job.returncode == 0, job.output
    text = get(f"{servers.pushgateway}/metrics")
    assert 'mpinet_summary_steps{instance="",job="pushjob",run="pushing-run"} 20' in text, text


def test_metrics_close_pushes_once_from_rank_0(servers, tmp_path):
    """Metrics.close(summary, run_dir) pushes when metrics.pushgateway is set, port or not."""
    from mpinet.cluster import local
    from mpinet.worker.config import load_config
    from mpinet.worker.metrics import Metrics

    cfg = load_config(
        None, ["metrics.job='closing'", f"metrics.pushgateway='{servers.pushgateway}'"]
    )
    metrics = Metrics(cfg, local())
    metrics.close({"steps": 7, "final_test_accuracy": 0.5}, tmp_path / "run-7")
    text = get(f"{servers.pushgateway}/metrics")
    assert 'mpinet_summary_steps{instance="",job="closing",run="run-7"} 7' in text
