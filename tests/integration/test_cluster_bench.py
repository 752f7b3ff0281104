"""benchmarks/cluster.py as a user runs it, and the link shaping of the namespace hosts
(tests/netns.py) it stands on. Both need root, as the multi-host tests do."""

import json
import subprocess
import sys

import netns
import pytest
from support import REPO, mpiexec

pytestmark = pytest.mark.mpi
WAN = netns.PROFILES["wan"]  # Mbit/s


@pytest.fixture(autouse=True)
def root_and_mpiexec():
    reason = netns.missing(shaping=True) or (None if mpiexec() else "no mpiexec")
    if reason:
        pytest.skip(reason)


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_shape_puts_a_token_bucket_on_both_ends_of_every_cable_until_unshaped():
    with netns.Hosts(2) as hosts:
        hosts.shape("wan")
        ends = [(s["host"], s["device"], s["kind"]) for s in hosts.qdisc_stats()]
        assert ends == [
            ("node0", "eth0", "tbf"),  # node0 -> bridge
            ("node0", "port0", "tbf"),  # bridge -> node0
            ("node1", "eth0", "tbf"),
            ("node1", "port1", "tbf"),
        ]
        shown = subprocess.run(
            ["tc", "-j", "-n", hosts.bridge, "qdisc", "show", "dev", "port1", "root"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(shown.stdout)[0]["options"]["rate"] == WAN * 1_000_000 // 8  # bytes/s
        hosts.unshape()
        assert {s["kind"] for s in hosts.qdisc_stats()} == {"noqueue"}  # the veth's default
        hosts.shape(1_000)  # left shaped: close() removes it with the namespaces
        made = [*hosts.namespaces.values(), hosts.bridge]
    assert not set(made) & set(namespaces())


def test_the_benchmark_measures_a_wan_link_below_its_rate_and_trains_across_it(tmp_path):
    """mlp on 2 hosts x 1 rank over the 100 Mbit/s profile. A token bucket passes at most
    rate x T + burst bytes in T, so a round of k >= 2 back-to-back allreduces of 1 MiB
    (the probe's) moves at most rate x (1 + burst / 2 MiB) = 103.9 Mbit/s; MPI's payload is
    below that again (tbf counts the frames' headers too). Unshaped, the same allreduce ran
    at 2,500-3,300 Mbit/s on a quiet machine and 318 at load average 7: half leaves room."""
    out = tmp_path / "results.json"
    command = [sys.executable, REPO / "benchmarks" / "cluster.py", "--nets", "mlp"]
    command += ["--links", "wan", "--layouts", "2x1", "--steps", "12", "--repeat", "1"]
    bench = subprocess.Popen(
        [*command, "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = bench.communicate(timeout=120)
    finally:  # its SIGTERM handler removes the hosts
        if bench.poll() is None:
            bench.terminate()
            bench.communicate(timeout=30)
    assert bench.returncode == 0, stdout + stderr
    assert not [ns for ns in namespaces() if ns.startswith(f"mpinet{bench.pid}")]
    result = json.loads(out.read_text())
    wan, bare = result["links"]["wan"], result["links"]["none"]
    burst = int(wan["tbf"][wan["tbf"].index("burst") + 1])
    assert wan["rate_mbit"] == WAN
    assert wan["mpi_bandwidth_mbit"] < WAN * (1 + burst / 2**21), wan["allreduce"]
    assert wan["mpi_bandwidth_mbit"] < bare["mpi_bandwidth_mbit"] / 2, (wan, bare)
    assert wan["qdisc"]["drops"] == 0, wan["qdisc"]  # tbf's queue held every burst
    assert 0 < wan["latency_us"] < 100_000
    (row,) = [
        r for r in result["rows"] if (r["net"], r["layout"], r["link"]) == ("mlp", "2x1", "wan")
    ]
    assert row["samples_per_second"] > 0 and 0 < row["allreduce_share"] < 1
    assert row["efficiency"] is None  # no 1x1 row to compare with
    assert "| mlp | 2 x 1 | wan |" in stdout
