"""Across hosts: MPICH's Hydra with a hostfile and its ssh launcher, on hosts made of
network namespaces (netns.py) joined by a bridge; MPI traffic crosses the veths over TCP.

Measured here (mpich wheel 5.0.2, ch4 with the ucx and ofi netmods, ucx by default): with
the defaults a 4 MB allreduce between two "hosts" sent 9.5 kB through the veth (UCX sees
one machine and uses shared memory); with UCX_TLS=tcp,self it sent 4 MB (as did
MPIR_CVAR_CH4_NETMOD=ofi with FI_PROVIDER=tcp). Ranks on one host still use MPICH's shared
memory between themselves.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import netns
import numpy as np
import pytest
from numerics import trajectory_tolerance
from support import (
    job_environment,
    mpiexec,
    mpinet_command,
    openmpi_bin,
    openmpi_flags,
    openmpi_or_skip,
    run_job,
    stop_job,
)

from mpinet.data.prepare import prepare
from mpinet.model.checkpoint import read

SCRIPTS = Path(__file__).parent / "scripts"
TCP = {"UCX_TLS": "tcp,self"}  # ucx is the wheel's default netmod; without this: shared memory
pytestmark = pytest.mark.mpi

SMALL = [
    "train.max_steps=12",
    "train.batch_size=48",
    "data.order='global'",
    "train.eval_every=1000",
    "data.prefetch=False",
    "model.name='mlp'",
    "model.hidden=[64, 32]",
    "optim.name='sgd'",
    "optim.lr=0.1",
]
# Equivalence runs in float64, with the tolerance from the arithmetic (tests/numerics.py).
EQUIVALENT = [*SMALL, "model.dtype='float64'"]
TOLERANCE = trajectory_tolerance(steps=12)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = netns.missing() or (None if mpiexec() else "MULTI-HOST TESTS SKIPPED: no mpiexec")
    if reason:
        pytest.skip(reason)
    try:
        made = netns.Hosts(3).__enter__()
    except subprocess.CalledProcessError as e:
        pytest.skip(
            f"MULTI-HOST TESTS SKIPPED: cannot make network namespaces here: "
            f"{' '.join(e.cmd)}: {e.stderr.strip()}"
        )
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cluster(hosts):
    """The hosts, with every cable plugged and no process left behind after the test."""
    yield hosts
    for name in hosts.names:
        hosts.kill_all(hosts.namespaces[name])
        hosts.link(name, up=True)
        hosts.tcp_retries(name, 15)


def hydra(hosts, tmp_path, slots, argv):
    """mpiexec on node0 starting len(slots) hosts x slots ranks through the ssh stand-in."""
    hostfile = hosts.hostfile(tmp_path / "hostfile", slots)
    return hosts.command(
        "node0",
        [
            mpiexec(),
            "-launcher",
            "ssh",
            "-launcher-exec",
            netns.STAND_IN,
            "-f",
            hostfile,
            "-n",
            sum(slots.values()),
            *argv,
        ],
    )


def prrte(hosts, tmp_path, slots, argv):
    """The same with Open MPI's mpirun: PRRTE's ssh launcher is the stand-in too."""
    ompi = openmpi_bin()
    hostfile = hosts.hostfile(tmp_path / "hostfile", slots, openmpi=True)
    return hosts.command(
        "node0",
        [
            ompi / "mpirun",
            *openmpi_flags(),
            "--prtemca",
            "plm_ssh_agent",
            netns.STAND_IN,
            "--hostfile",
            hostfile,
            "-n",
            sum(slots.values()),
            *argv,
        ],
    )


def environment(hosts, tmp_path, bind=()):
    return hosts.environment(job_environment(XDG_CACHE_HOME=str(tmp_path / "cache"), **TCP), bind)


def dump(command, out, env, timeout=90):
    job = run_job(command, timeout=timeout, env=env)
    assert job.returncode == 0, job.output
    return [np.load(out / f"params.rank{r}.npy") for r in range(4)]


@pytest.mark.numerics
def test_two_hosts_train_what_one_host_trains(cluster, mnist_h5, tmp_path):
    """2 hosts x 2 ranks = one host -n 4 (global data order, float64), within the
    tolerance of tests/numerics.py. Each host reads its own copy of the data, bound over the
    same path (as on local disks): the fingerprints agree."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    script = [sys.executable, SCRIPTS / "train_dump.py"]
    reference = dump(
        [mpiexec(), "-n", "4", *script, one, f"data.path={str(mnist_h5)!r}", *EQUIVALENT],
        one,
        job_environment(XDG_CACHE_HOME=str(tmp_path / "cache")),
    )
    data = tmp_path / "data.h5"
    data.touch()
    for host in ("node0", "node1"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "data.h5").write_bytes(mnist_h5.read_bytes())
    before = cluster.bytes_sent("node1")
    spread = dump(
        hydra(
            cluster,
            tmp_path,
            {"node0": 2, "node1": 2},
            [*script, two, f"data.path={str(data)!r}", *EQUIVALENT],
        ),
        two,
        environment(cluster, tmp_path, bind=[(f"{tmp_path}/{{host}}/data.h5", data)]),
    )
    assert cluster.bytes_sent("node1") - before > 12 * 4 * 50_000  # 12 allreduces of 51 k floats
    for rank, p in enumerate(spread):
        assert np.array_equal(p, spread[0]), f"rank {rank} differs from rank 0"
    worst = np.abs(spread[0] - reference[0]).max() / np.abs(reference[0]).max()
    assert worst < TOLERANCE, f"2 hosts x 2 vs -n 4: max relative difference {worst:.3g}"


@pytest.mark.numerics
def test_two_hosts_under_open_mpi_train_what_one_process_trains(cluster, mnist_h5, tmp_path):
    """The same with Open MPI's mpirun (PRRTE's ssh launcher, through the same stand-in):
    its ob1/tcp transport carries the allreduce across the bridge."""
    ompi = openmpi_or_skip()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    script = [ompi / "python", SCRIPTS / "train_dump.py"]
    data = f"data.path={str(mnist_h5)!r}"
    env = environment(cluster, tmp_path)
    reference = run_job([*script, one, data, *EQUIVALENT], timeout=90, env=env)
    assert reference.returncode == 0, reference.output
    before = cluster.bytes_sent("node1")
    spread = dump(
        prrte(cluster, tmp_path, {"node0": 2, "node1": 2}, [*script, two, data, *EQUIVALENT]),
        two,
        env,
    )
    assert cluster.bytes_sent("node1") - before > 12 * 4 * 50_000
    for rank, p in enumerate(spread):
        assert np.array_equal(p, spread[0]), f"rank {rank} differs from rank 0"
    alone = np.load(one / "params.rank0.npy")
    worst = np.abs(spread[0] - alone).max() / np.abs(alone).max()
    assert worst < TOLERANCE, f"2 hosts x 2 vs one process: max relative difference {worst:.3g}"


@pytest.fixture(scope="module")
def other_mnist(shared_data, tmp_path_factory):
    """The same images with 1000 training images held out: another fingerprint."""
    out = tmp_path_factory.mktemp("other") / "mnist.h5"
    return prepare("mnist", source=shared_data / "mnist", out=out, val=1000)


def test_a_host_with_other_data_stops_every_rank_with_one_line(
    cluster, mnist_h5, other_mnist, tmp_path
):
    data = tmp_path / "data.h5"
    data.touch()
    for host, source in (("node0", mnist_h5), ("node1", other_mnist)):
        (tmp_path / host).mkdir()
        (tmp_path / host / "data.h5").write_bytes(source.read_bytes())
    run_dir = tmp_path / "run"
    job = run_job(
        hydra(cluster, tmp_path, {"node0": 2, "node1": 2}, train_command(data, run_dir, SMALL)),
        timeout=90,
        env=environment(cluster, tmp_path, bind=[(f"{tmp_path}/{{host}}/data.h5", data)]),
    )
    assert job.returncode == 2, job.output
    errors = [line for line in job.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, job.stderr  # one line, from rank 0; every rank exited 2
    assert (
        "data file differs across ranks: ranks 0-1 have sha256" in errors[0]
        and "ranks 2-3 have sha256" in errors[0]
    ), errors[0]  # the ranks of each host
    assert "Traceback" not in job.output
    assert not (run_dir / "history.jsonl").exists()


def train_command(data, run_dir, settings, resume=None, mpi="mpich"):
    mpinet = [openmpi_bin() / "mpinet"] if mpi == "openmpi" else mpinet_command()
    command = [*mpinet, "train", "--data", data, "--run-dir", run_dir]
    for s in settings:
        command += ["--set", s]
    return command + (["--resume", resume] if resume else [])


PARTITION = [
    "model.name='mlp'",
    "model.hidden=[32]",
    "train.batch_size=64",
    "train.max_steps=300",
    "train.checkpoint_every=5",
    "train.keep_last=3",
    "train.collective_timeout=3",
    "train.log_every=10",
    "data.prefetch=False",
]


@pytest.mark.parametrize("mpi", ["mpich", "openmpi"])
def test_a_cut_link_aborts_the_job_and_resume_continues(cluster, mnist_h5, tmp_path, mpi):
    """node1's cable is cut after the first checkpoint: every blocking collective would hang
    for good; the watchdog ends the job (exit 3) within the collective timeout + 10 s.

    Open MPI: every rank ends the same way (Abort, then comm.abort's deadline), but mpirun
    then waits for node1's daemon until TCP gives up: measured, still running 40 s after the
    cut with Linux's default tcp_retries2 (15: ~15 min). With 4 on the launching host (~6 s)
    it ends in time, printing "PRTE has lost communication with a remote daemon", and
    exits 0 or 1, not the ranks' 3: the missing summary.json says the run did not finish.
    With 3, Open MPI's TCP transport gave up before the watchdog. See docs/multihost.md.
    """
    if mpi == "openmpi":
        openmpi_or_skip()
        cluster.tcp_retries("node0", 4)
    launch = prrte if mpi == "openmpi" else hydra
    run_dir = tmp_path / "run"
    command = launch(
        cluster,
        tmp_path,
        {"node0": 2, "node1": 2},
        train_command(mnist_h5, run_dir, PARTITION, mpi=mpi),
    )
    env = environment(cluster, tmp_path)
    # The log goes to a file: a process orphaned on the cut host may hold a pipe open.
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    try:
        latest = run_dir / "checkpoints" / "latest"
        deadline = time.monotonic() + 60
        while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before the link could be cut"
        cluster.link("node1", up=False)
        cut = time.monotonic()
        proc.wait(timeout=3 + 10 + 5)
        ended = time.monotonic() - cut
    finally:
        if proc.poll() is None:
            stop_job(proc)
    stderr = log.read_text(errors="replace")
    if mpi == "mpich":
        assert proc.returncode == 3, stderr
    else:
        assert "lost communication with a remote daemon" in stderr, stderr
    assert not (run_dir / "summary.json").exists()
    assert ended <= 3 + 10, f"the job ended {ended:.1f} s after the cut"
    # node0's ranks name the collective (whichever the cut caught: the gradient's
    # allreduce_mean_, or a checkpoint's allgather_object), the step, and node1's ranks:
    stall = re.search(
        r"rank 0/4: \w+ \(collective #\d+, step \d+\) has not completed "
        r"after [\d.]+ s \(timeout 3 s\).*no answer from ranks 2-3",
        stderr,
    )
    assert stall, stderr
    checkpoint = read(run_dir / "checkpoints" / latest.read_text().strip())
    stopped = checkpoint.meta["step"]
    assert stopped >= 5

    cluster.link("node1", up=True)  # healed: the same command continues
    job = run_job(
        launch(
            cluster,
            tmp_path,
            {"node0": 2, "node1": 2},
            train_command(mnist_h5, run_dir, PARTITION, resume="auto", mpi=mpi),
        ),
        timeout=90,
        env=env,
    )
    assert job.returncode == 0, job.output
    assert f"at step {stopped} " in job.stderr, job.stderr  # "resumed from ... at step N"
    final = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert read(run_dir / "checkpoints" / final).meta["step"] == 300


SCRAPE = """
import sys, time, urllib.request
pending, deadline = set(sys.argv[1:]), time.monotonic() + 40
while pending and time.monotonic() < deadline:
    for url in sorted(pending):
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            continue
        ranks = {line.split('rank="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("mpinet_train_steps_total{")}
        print(url, *ranks, flush=True)
        pending.discard(url)
    time.sleep(0.2)
sys.exit(1 if pending else 0)
"""


def test_every_rank_on_every_host_serves_metrics(cluster, mnist_h5, tmp_path):
    """3 hosts (2 + 1 + 1 ranks), metrics.host 0.0.0.0: a scraper on node2 reaches each
    rank at its host's address and port 9400 + local rank, across the bridge."""
    settings = [
        "model.name='mlp'",
        "model.hidden=[32]",
        "train.max_steps=100000",
        "metrics.port=9400",
        "metrics.host='0.0.0.0'",
        "data.prefetch=False",
    ]
    command = hydra(
        cluster,
        tmp_path,
        {"node0": 2, "node1": 1, "node2": 1},
        train_command(mnist_h5, tmp_path / "run", settings),
    )
    env = environment(cluster, tmp_path)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    expected = {
        f"http://{cluster.addresses['node0']}:9400/metrics": "0",
        f"http://{cluster.addresses['node0']}:9401/metrics": "1",
        f"http://{cluster.addresses['node1']}:9400/metrics": "2",
        f"http://{cluster.addresses['node2']}:9400/metrics": "3",
    }
    try:
        scrape = run_job(
            cluster.command("node2", [sys.executable, "-c", SCRAPE, *expected]), timeout=60, env=env
        )
    finally:
        output = "".join(stop_job(proc))
    assert scrape.returncode == 0, scrape.output + output
    answered = dict(line.split() for line in scrape.stdout.splitlines())
    assert answered == expected, scrape.output
