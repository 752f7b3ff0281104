"""Hosts made of Linux network namespaces, for multi-host MPI tests on one machine.

    with Hosts(3) as hosts:            # needs root and iproute2 (`ip`)
        hosts.run("node0", [...])      # a command inside node0's namespace, hostname node0
        hosts.link("node1", up=False)  # cut node1's cable (inside its namespace)
        hosts.shape("wan")             # every cable 100 Mbit/s both ways (tc tbf); unshape()

Layout: one namespace per host (`mpinet<pid>h<i>`), each with loopback and one veth `eth0`
(10.77.0.<i+1>/24), the other ends enslaved to a bridge in a namespace of its own
(`mpinet<pid>br`). Names resolve through `/etc/netns/<ns>/hosts` (`ip netns exec` mounts it
over /etc/hosts). Every command runs in a UTS namespace of its own with the host's name, so
`gethostname()` differs per host as on real machines. Nothing is configured in the root
namespace: no address, no route; the veths live only in our namespaces.

The ssh stand-in (scripts/ssh_netns) reads MPINET_NETNS_HOSTS (`node0=ns,...`) and
MPINET_NETNS_TIMEOUT from the environment that `hosts.environment()` returns.

Shaping (`shape(profile or Mbit/s)`, `missing(shaping=True)` also wants `tc`): a tbf qdisc
on both ends of every host's cable, the host's eth0 (host -> bridge) and its bridge port
(bridge -> host), so each direction crosses one token bucket at the rate. Latency stays the
veth's own (this kernel has no netem). `qdisc_stats()` has tbf's drop counters.

Cleanup (`close()`, also after a failure): kill every process left in each namespace
(`ip netns pids`), delete the namespaces and /etc/netns/<ns>, and remove the shared memory
and temporary files of MPICH, Hydra and Open MPI that appeared during the run and no live
process uses (support.remove_leftovers).
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import mpi_leftovers, remove_leftovers

SCRIPTS = Path(__file__).parent / "integration" / "scripts"
STAND_IN = SCRIPTS / "ssh_netns"
SUBNET = "10.77.0"
LAUNCH_TIMEOUT = 120  # seconds: the ssh stand-in's outer limit on any command it runs
# Link profiles for Hosts.shape(): the rate in Mbit/s; "none" is the bare veth.
PROFILES = {"none": None, "10gbe": 10_000, "1gbe": 1_000, "wan": 100}
# tbf's bucket, bytes. At least one whole 64 KiB GSO packet with headers (a smaller bucket
# makes tbf split every packet), and 1 ms of the rate: measured with TCP here, 1 Gbit/s with
# an 80 KiB bucket reached 690 Mbit/s, with 128 KiB 956; 10 Gbit/s needed ~1 MiB (the
# watchdog timer and softirq cannot release packets much more often than that).
MIN_BURST = 80 * 1024
# Bytes tbf queues before it drops: more than a whole step's cross-host traffic (2 ranks a
# host x 1.5 x simple_cnn's 1.7 MB gradient ~ 5 MB), so a burst is delayed, never dropped
# into TCP retransmits; a switch's buffer does the same.
LIMIT = 16 * 2**20
# An echo server ("serve": prints its port) and its client (HOST PORT COUNT: prints the
# seconds of each 8-byte round trip), for Hosts.tcp_round_trips.
ECHO = """
import json, socket, sys, time
if sys.argv[1] == "serve":
    with socket.create_server(("0.0.0.0", 0)) as server:
        print(server.getsockname()[1], flush=True)
        conn = server.accept()[0]
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(8):
            conn.sendall(data)
else:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(int(sys.argv[3])):
        t0 = time.perf_counter()
        conn.sendall(b"8 bytes.")
        conn.recv(8)  # 8 bytes arrive in one segment
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))
"""


def missing(shaping=False):
    """Why the harness cannot run here, or None; shaping: also Hosts.shape()'s `tc`."""
    if os.geteuid() != 0:
        return "MULTI-HOST TESTS SKIPPED: not root (network namespaces need CAP_SYS_ADMIN)"
    for tool in ("ip", "unshare", "timeout", *(("tc",) if shaping else ())):
        if shutil.which(tool) is None:
            return (
                f"MULTI-HOST TESTS SKIPPED: `{tool}` is missing "
                f"(apt-get install -y iproute2 util-linux coreutils)"
            )
    return None


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _tc(ns, *args, check=True):
    return subprocess.run(
        ["tc", "-n", ns, *args], capture_output=True, text=True, timeout=30, check=check
    )


def tbf(mbit):
    """tc's words for a token bucket of `mbit` Mbit/s (the burst and limit above)."""
    burst = max(MIN_BURST, mbit * 1_000_000 // 8 // 1000)
    return ["tbf", "rate", f"{mbit}mbit", "burst", str(burst), "limit", str(LIMIT)]


class Hosts:
    def __init__(self, count=3, tmp=None):
        tag = f"mpinet{os.getpid()}"
        self.names = [f"node{i}" for i in range(count)]
        self.namespaces = {n: f"{tag}h{i}" for i, n in enumerate(self.names)}
        self.addresses = {n: f"{SUBNET}.{i + 1}" for i, n in enumerate(self.names)}
        self.bridge = f"{tag}br"
        self.tmp = Path(tmp) if tmp else None
        self._before = mpi_leftovers()
        self._made = []
        self._etc_made = not Path("/etc/netns").exists()
        self.rate = None  # Mbit/s of every cable, None: unshaped

    # -- set-up and tear-down ---------------------------------------------------------
    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _build(self):
        self._add_namespace(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{self.addresses[n]} {n}\n" for n in self.names
        )
        for i, name in enumerate(self.names):
            ns = self.namespaces[name]
            self._add_namespace(ns)
            _ip(
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                f"port{i}",
                "netns",
                self.bridge,
            )
            _ip("-n", self.bridge, "link", "set", f"port{i}", "master", "br0")
            _ip("-n", self.bridge, "link", "set", f"port{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)

    def _add_namespace(self, ns):
        _ip("netns", "add", ns)
        self._made.append(ns)

    def close(self):
        if self.rate is not None:  # they would go with the veths; undone like the rest
            self.unshape()
        for ns in reversed(self._made):
            self.kill_all(ns)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self._made = []
        if self._etc_made:
            try:
                Path("/etc/netns").rmdir()  # only if we made it and it is empty
            except OSError:
                pass
        remove_leftovers(self._before)

    def kill_all(self, ns):
        """SIGKILL every process whose network namespace is `ns` (they are all ours)."""
        for _ in range(3):
            found = _ip("netns", "pids", ns, check=False).stdout.split()
            if not found:
                return
            for pid in found:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            time.sleep(0.2)

    # -- using the hosts --------------------------------------------------------------
    def command(self, host, argv):
        """argv run on `host` (through the ssh stand-in, as Hydra does); needs the
        environment from `environment()`."""
        return [str(STAND_IN), host, shlex.join(map(str, argv))]

    def environment(self, env, bind=()):
        """env plus what the ssh stand-in needs; bind: (SRC with {host}, DST) pairs to
        bind-mount on every host."""
        return {
            **env,
            "MPINET_NETNS_HOSTS": ",".join(f"{n}={ns}" for n, ns in self.namespaces.items()),
            "MPINET_NETNS_TIMEOUT": str(LAUNCH_TIMEOUT),
            "MPINET_NETNS_BIND": ";".join(f"{src}={dst}" for src, dst in bind),
        }

    def hostfile(self, path, slots, openmpi=False):
        """A hostfile, {"node0": 2, ...} -> path: Hydra's `node0:2`, or Open MPI's
        `node0 slots=2`."""
        line = "{} slots={}\n" if openmpi else "{}:{}\n"
        Path(path).write_text("".join(line.format(h, n) for h, n in slots.items()))
        return Path(path)

    def link(self, host, up):
        """Plug or cut the host's cable (its eth0, inside its namespace)."""
        _ip("-n", self.namespaces[host], "link", "set", "eth0", "up" if up else "down")

    def tcp_retries(self, host, count):
        """The host's net.ipv4.tcp_retries2 (per namespace): how often TCP retransmits an
        unanswered segment before giving up; Linux's default 15 takes ~15 min, 4 ~6 s."""
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.namespaces[host],
                "sh",
                "-c",
                f"echo {int(count)} > /proc/sys/net/ipv4/tcp_retries2",
            ],
            check=True,
            timeout=30,
        )

    def tcp_round_trips(self, client, server, count=2000):
        """Seconds of `count` 8-byte TCP round trips (no Nagle) from `client` to an echo on
        `server`, the first tenth (the warm-up) left out."""
        echo = subprocess.Popen(self._python(server, ECHO, "serve"), stdout=subprocess.PIPE)
        try:
            port = echo.stdout.readline().decode().strip()
            argv = self._python(client, ECHO, self.addresses[server], port, count)
            out = subprocess.run(argv, capture_output=True, timeout=120, check=True).stdout
        finally:
            echo.kill()
            echo.wait()
        return json.loads(out)[count // 10 :]

    def _python(self, host, code, *args):
        """argv running Python `code` in the host's namespace (no UTS namespace needed)."""
        ns = self.namespaces[host]
        return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *map(str, args)]

    def bytes_sent(self, host):
        """Bytes sent through the host's eth0 so far."""
        out = _ip("-n", self.namespaces[host], "-s", "-j", "link", "show", "eth0").stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    # -- link shaping ---------------------------------------------------------------
    def cable_ends(self):
        """(host, namespace, device) of both ends of every cable: the host's eth0 sends
        host -> bridge, its bridge port sends bridge -> host."""
        for i, name in enumerate(self.names):
            yield name, self.namespaces[name], "eth0"
            yield name, self.bridge, f"port{i}"

    def shape(self, link):
        """Every cable at one rate, both ways: `link` is a PROFILES name or Mbit/s;
        "none" removes the shaping (and with it the counters of qdisc_stats())."""
        mbit = PROFILES[link] if isinstance(link, str) else int(link)
        if mbit is None:
            self.unshape()
            return
        for _, ns, dev in self.cable_ends():
            _tc(ns, "qdisc", "replace", "dev", dev, "root", *tbf(mbit))
        self.rate = mbit

    def unshape(self):
        """Back to the bare veths (their default: no qdisc)."""
        for _, ns, dev in self.cable_ends():
            _tc(ns, "qdisc", "del", "dev", dev, "root", check=False)  # none there: fine
        self.rate = None

    def qdisc_stats(self):
        """[{host, device, kind, bytes, packets, drops, overlimits, requeues, backlog}] of
        each cable end's root qdisc since it was set."""
        stats = []
        for host, ns, dev in self.cable_ends():
            out = _tc(ns, "-s", "-j", "qdisc", "show", "dev", dev, "root").stdout
            for q in json.loads(out or "[]"):
                keys = ("kind", "bytes", "packets", "drops", "overlimits", "requeues", "backlog")
                stats.append({"host": host, "device": dev, **{k: q.get(k) for k in keys}})
        return stats
