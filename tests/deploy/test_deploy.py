"""deploy/: promtool on the Prometheus files, the dashboard and alerts against the metrics
mpinet really exports, the Kubernetes manifests, the Slurm script and targets.py."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import REPO

from mpinet.cluster import local
from mpinet.worker.config import load_config
from mpinet.worker.metrics import Metrics, metric_names
from mpinet.worker.push import COMPLETION, SUMMARY_METRICS, summary_registry

DEPLOY = REPO / "deploy"
HERE = Path(__file__).parent
METRIC = re.compile(r"\b(mpinet_[a-z0-9_]+)")


@pytest.fixture(scope="module")
def exported():
    """Every sample name a rank serves or a run pushes (with _total, _bucket, _sum ...)."""
    metrics = Metrics(load_config(None, ["metrics.port=0"]), local())
    try:
        names = metric_names(metrics.registry)
    finally:
        metrics.close({})
    pushed = metric_names(summary_registry({k: 1.0 for k in SUMMARY_METRICS}))
    assert {name for name, _ in SUMMARY_METRICS.values()} | {COMPLETION[0]} == pushed
    return names | pushed


def promtool(*args, cwd=None):
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "PROMTOOL TESTS SKIPPED: `promtool` is not on PATH; install the Debian "
            "package: apt-get install -y prometheus"
        )
    done = subprocess.run([found, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_scrape_config(tmp_path):
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    targets = subprocess.run(
        [
            sys.executable,
            str(copy / "targets.py"),
            "node1",
            "node2",
            "--ranks-per-host",
            "4",
            "--base-port",
            "9400",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    (copy / "targets" / "job.json").write_text(targets)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=copy)


def test_promtool_accepts_the_alert_rules():
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", str(DEPLOY / "alerts.yml"))


def test_the_alerts_fire_when_they_should():
    """promtool's rule unit tests: stall, NaN loss, straggler, old checkpoint."""
    promtool("test", "rules", "alerts_test.yml", cwd=HERE)


def test_targets_py_lists_one_target_per_rank():
    out = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "targets.py"),
            "a",
            "b",
            "--ranks-per-host",
            "2",
            "--base-port",
            "9400",
            "--label",
            "x=y",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    groups = json.loads(out)
    assert [g["targets"] for g in groups] == [["a:9400", "a:9401"], ["b:9400", "b:9401"]]
    assert groups[0]["labels"] == {"host": "a", "x": "y"}


def dashboard_queries():
    dashboard = json.loads((DEPLOY / "grafana" / "mpinet-dashboard.json").read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [
        (f"variable {v['name']}", v["definition"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    return dashboard, queries


def test_the_dashboard_queries_only_metrics_mpinet_exports(exported):
    dashboard, queries = dashboard_queries()
    assert dashboard["uid"] and len(dashboard["panels"]) >= 10
    for title, expr in queries:
        names = set(METRIC.findall(expr))
        assert names or "up{" in expr, f"panel {title!r} queries no mpinet metric: {expr}"
        assert names <= exported, f"panel {title!r}: {sorted(names - exported)} not exported"


def test_the_dashboard_shows_what_the_issue_asks_for():
    _, queries = dashboard_queries()
    text = " ".join(expr for _, expr in queries)
    for needed in (
        "mpinet_train_loss",
        "mpinet_eval_accuracy",
        "mpinet_train_samples_total",
        "mpinet_step_phase_duration_seconds_sum",
        "mpinet_collective_wait_seconds",
        "mpinet_last_checkpoint_timestamp_seconds",
        "mpinet_last_step_timestamp_seconds",
    ):
        assert needed in text, needed


def test_the_alerts_use_only_metrics_mpinet_exports(exported):
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "MpinetTrainingStalled",
        "MpinetLossNotFinite",
        "MpinetRankSlower",
        "MpinetCheckpointTooOld",
    }
    for rule in rules:
        assert set(METRIC.findall(rule["expr"])) <= exported, rule["alert"]


def manifests():
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_the_mpijob_has_a_launcher_workers_metrics_ports_and_the_volume():
    docs = manifests()
    assert set(docs) == {"MPIJob", "PersistentVolumeClaim", "PodMonitor"}
    job = docs["MPIJob"]
    assert job["apiVersion"] == "kubeflow.org/v2beta1"
    spec = job["spec"]
    assert spec["mpiImplementation"] == "MPICH"
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    worker_template = spec["mpiReplicaSpecs"]["Worker"]["template"]
    worker = worker_template["spec"]
    args = launcher["containers"][0]["args"]
    ranks = int(args[args.index("-n") + 1])
    assert ranks == spec["mpiReplicaSpecs"]["Worker"]["replicas"] * spec["slotsPerWorker"]
    assert args[args.index("--resume") + 1] == "auto"
    ports = [
        p["containerPort"]
        for p in worker["containers"][0]["ports"]
        if p["name"].startswith("metrics-")
    ]
    assert ports == [9400 + i for i in range(spec["slotsPerWorker"])]  # base + local rank
    assert worker_template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    endpoints = [e["port"] for e in docs["PodMonitor"]["spec"]["podMetricsEndpoints"]]
    assert endpoints == [f"metrics-{i}" for i in range(spec["slotsPerWorker"])]
    claim = worker["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    for pod in (launcher, worker):
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_core_objects_validate_against_the_kubernetes_schemas():
    validator = pytest.importorskip(
        "kubernetes_validate",
        reason="KUBERNETES SCHEMA CHECK SKIPPED: pip install "
        "kubernetes-validate (the MPIJob is still YAML-checked)",
    )
    docs = manifests()
    version = "1.30.0"
    validator.validate(docs["PersistentVolumeClaim"], version, strict=True)
    # The MPIJob is a custom resource: validate the pods it makes, as Pods.
    for role, replica in docs["MPIJob"]["spec"]["mpiReplicaSpecs"].items():
        template = replica["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"mpinet-{role.lower()}", **template["metadata"]},
            "spec": template["spec"],
        }
        validator.validate(pod, version, strict=True)


def test_the_slurm_script_is_bash_and_has_the_directives():
    script = DEPLOY / "slurm" / "train.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for needed in (
        "#SBATCH --signal=B:USR1@",
        "#SBATCH --requeue",
        "--resume auto",
        "OPENBLAS_NUM_THREADS=1",
        "--cpus-per-task=1",
        "deploy/targets.py",
    ):
        assert needed in text, needed


def test_the_dockerfile_installs_a_wheel_with_mpich_as_a_non_root_user():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "pip wheel" in text and "[mpich]" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


FAKE_MPIRUN = """#!/bin/sh
# mpirun stand-in: $FAKE writes (or not) the summary a real run would, and exits.
while [ "$1" != "--run-dir" ]; do shift; done
mkdir -p "$2"
case "$FAKE" in
    done) echo '{"preempted": false, "complete": true}' > "$2/summary.json"; exit 0 ;;
    preempted) echo '{"preempted": true, "complete": false}' > "$2/summary.json"; exit 75 ;;
    lost) exit 0 ;;
esac
"""
FAKE_SCONTROL = """#!/bin/sh
if [ "$1" = show ]; then echo node1; echo node2; else echo "scontrol $*" >> "$CALLS"; fi
"""


def run_sbatch(tmp_path, fake, run_dir):
    """train.sbatch as Slurm would run it, with mpirun and scontrol stand-ins on PATH."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, text in (("mpirun", FAKE_MPIRUN), ("scontrol", FAKE_SCONTROL)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    (tmp_path / "deploy").mkdir(exist_ok=True)
    shutil.copy(DEPLOY / "targets.py", tmp_path / "deploy")  # the script runs from the repo
    env = {
        "PATH": f"{stubs}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE": fake,
        "CALLS": str(tmp_path / "calls"),
        "RUN_DIR": str(run_dir),
        "TARGETS_DIR": str(tmp_path / "targets"),
        "SLURM_JOB_NAME": "mpinet",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NTASKS": "4",
    }
    return subprocess.run(
        ["bash", str(DEPLOY / "slurm" / "train.sbatch")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "fake, code, requeued", [("done", 0, False), ("preempted", 75, True), ("lost", 1, False)]
)
def test_the_slurm_script_trusts_the_summary_not_only_the_exit_code(tmp_path, fake, code, requeued):
    """ "lost": Open MPI's mpirun exited 0 after a host was cut off (docs/multihost.md)."""
    done = run_sbatch(tmp_path, fake, tmp_path / "run")
    assert done.returncode == code, done.stdout + done.stderr
    calls = tmp_path / "calls"
    assert (calls.exists() and "requeue 42" in calls.read_text()) == requeued
    assert ("did not finish" in done.stderr) == (fake == "lost")
    assert not list((tmp_path / "targets").iterdir())  # its targets removed at the end


def test_the_slurm_script_does_not_take_a_pre_empted_summary_for_a_finished_run(tmp_path):
    """A lost host after a pre-empted leg: mpirun exits 0, the summary is the old leg's."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"preempted": true, "complete": false}')
    done = run_sbatch(tmp_path, "lost", run_dir)
    assert done.returncode == 1 and "did not finish" in done.stderr


def test_the_slurm_script_accepts_a_run_that_was_already_complete(tmp_path):
    """Resubmitted after it finished: mpinet says so, exits 0, rewrites nothing."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"preempted": false, "complete": true}')
    done = run_sbatch(tmp_path, "lost", run_dir)  # exits 0 and writes no summary
    assert done.returncode == 0, done.stderr
