"""Data-parallel training across hosts joined by links with real network costs.

    python benchmarks/cluster.py                          # needs root: namespaces and tc
    python benchmarks/cluster.py --nets mlp --links wan --layouts 1x1 2x1 --steps 20
    python benchmarks/cluster.py --keep /work/runs/cluster --out /work/runs/cluster/results.json

Hosts: network namespaces on a bridge, from the multi-host tests' harness tests/netns.py
(imported from there: this file puts tests/ on sys.path), every cable shaped both ways to a
netns.PROFILES rate by tc's tbf. Latency is the veth's own, measured (8-byte MPI and TCP round
trips), as is the bandwidth MPI achieves (back-to-back allreduces between two hosts of 1 MiB
and of each gradient: S bytes put S on each direction of the cable). Then `mpinet train` per
net, HOSTSxRANKS layout and link (50 samples a rank, one BLAS thread, --profile): samples/s,
the allreduce share of rank 0's steps, the efficiency against 1x1; medians of --repeat runs.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the namespace-host harness, tests/netns.py
import netns  # noqa: E402
from support import job_environment, mpiexec, mpinet_command, shared_data_dir  # noqa: E402

from mpinet.data.prepare import prepare  # noqa: E402
from mpinet.model import build  # noqa: E402

NETS = {"mlp": {"hidden": [100] * 4}, "simple_cnn": {}, "deep_cnn": {}}  # model spec keys
SETTINGS = "train.blas_threads=1 metrics.port=-1 train.plots=false data.eval_split='val'"
VARIANTS = {
    "plain": [],
    "bf16": ["train.allreduce_dtype='bfloat16'"],
    "overlap": ["train.overlap=true"],
}
PER_RANK_BATCH = 50  # samples a rank; train.batch_size is the global batch: 50 x world size
WAIT, TRANSFER = "allreduce wait", "allreduce transfer"
TX_BYTES = Path("/sys/class/net/eth0/statistics/tx_bytes")  # in a namespace: its host's
LINK_HEAD = "link|rate|MPI 8 B round trip|TCP 8 B round trip|allreduce 1 MiB|MPI bandwidth|wire"
ROW_HEAD = "net|hosts x ranks|link|variant|samples/s|step (median)|allreduce share|efficiency|"


# -- the link probe: one rank on each of two hosts, under mpiexec -------------------------
def probe(sizes):
    """Rank 0 prints the 8-byte round trips and the allreduce times as one JSON line."""
    from mpi4py import MPI

    comm, buf, times, deadline = MPI.COMM_WORLD, np.ones(1), [], time.perf_counter() + 2
    while buf[0]:  # rank 0 sends 0 to stop: after 5,000 round trips or 2 s (a loaded machine)
        t0 = time.perf_counter()
        if comm.Get_rank() == 0:
            buf[0] = len(times) < 4999 and t0 < deadline
            comm.Send(buf, dest=1)
            comm.Recv(buf, source=1)
        else:
            comm.Recv(buf, source=0)
            comm.Send(buf, dest=0)
        times.append(time.perf_counter() - t0)
    allreduce = {label: allreduce_time(comm, int(n)) for label, n in sizes}
    if comm.Get_rank() == 0:
        warm = sorted(times[len(times) // 25 :])  # the first 4 %: warm-up
        print(json.dumps({"mpi": warm, "allreduce": allreduce}), flush=True)


def allreduce_time(comm, nbytes, seconds=0.2, rounds=5):
    """Rounds of back-to-back in-place allreduces -> the medians of the seconds per call
    (the slowest rank's) and of the bytes each call put on this host's eth0."""
    from mpi4py import MPI

    buf = np.ones(nbytes // 4, np.float32)
    for _ in range(3):  # warm up: connections, first touch; the last one timed
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf)
    calls = comm.bcast(max(2, int(seconds / (time.perf_counter() - t0))))
    per_call, wire = [], []
    for _ in range(rounds):
        comm.Barrier()
        sent, t0 = int(TX_BYTES.read_text()), time.perf_counter()
        for _ in range(calls):
            comm.Allreduce(MPI.IN_PLACE, buf)
        per_call.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / calls)
        wire.append((int(TX_BYTES.read_text()) - sent) / calls)  # after the max: all sent
    seconds, wire_bytes = median(per_call), median(wire)
    mbit = {"mbit_s": nbytes * 8 / seconds / 1e6, "wire_mbit_s": wire_bytes * 8 / seconds / 1e6}
    return {"bytes": nbytes, "seconds": seconds, "wire_bytes": wire_bytes, **mbit}


# -- the cluster side ------------------------------------------------------------------
def hydra(hosts, work, slots, argv):
    """mpiexec on node0 starting {host: ranks} through the ssh stand-in -> the command."""
    hostfile = hosts.hostfile(work / "hostfile", slots)
    mpi = [mpiexec(), "-launcher", "ssh", "-launcher-exec", netns.STAND_IN, "-f", hostfile]
    return hosts.command("node0", [*mpi, "-n", sum(slots.values()), *argv])


def run(command, env):
    """Run a job to its end; a failure stops the benchmark with the job's output."""
    job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if job.returncode:
        output = (job.stdout + job.stderr)[-4000:]  # the end: the error
        raise SystemExit(f"{' '.join(map(str, command))}: exit {job.returncode}\n{output}")
    return job.stdout


def measure_link(hosts, work, env, sizes, link):
    """The cable between node0 and node1 as MPI and TCP see it, shaped to `link`."""
    hosts.shape(link)
    argv = [sys.executable, __file__, "--probe", *(f"{k}={v}" for k, v in sizes.items())]
    found = json.loads(run(hydra(hosts, work, {"node0": 1, "node1": 1}, argv), env))
    mpi, tcp = found["mpi"], sorted(hosts.tcp_round_trips("node0", "node1"))
    rate = netns.PROFILES[link]
    return {
        "rate_mbit": rate,
        "tbf": netns.tbf(rate) if rate else None,  # tc's words, on each cable end
        "latency_us": median(mpi) / 2 * 1e6,  # one way: half the MPI round trip
        "mpi_8B_round_trip_us": {"median": median(mpi) * 1e6, "min": mpi[0] * 1e6},
        "tcp_8B_round_trip_us": {"median": median(tcp) * 1e6, "min": tcp[0] * 1e6},
        "mpi_bandwidth_mbit": found["allreduce"]["1 MiB"]["mbit_s"],
        "allreduce": found["allreduce"],
    }


def train(hosts, work, env, key, steps):
    """One `mpinet train` of key = (net, (hosts, ranks per host), link, variant, round)."""
    net, (count, ranks), link, variant, rnd = key
    tag = "" if variant == "plain" else f"-{variant}"
    run_dir = work / net / f"{count}x{ranks}-{link}{tag}-{rnd}"
    shutil.rmtree(run_dir, ignore_errors=True)  # ours, from an earlier --keep of this DIR
    spec = {"name": net, **NETS[net]}
    settings = [
        *(f"model.{k}={v!r}" for k, v in spec.items()),
        *SETTINGS.split(),
        *VARIANTS[variant],
    ]
    settings += [f"train.max_steps={steps}", f"train.batch_size={PER_RANK_BATCH * count * ranks}"]
    start = max(1, steps // 4)
    argv = [*mpinet_command(), "train", "--data", work / "mnist-val.h5", "--run-dir", run_dir]
    argv += ["--profile", f"{start}:{steps - start}", *(w for s in settings for w in ("--set", s))]
    run(hydra(hosts, work, {f"node{h}": ranks for h in range(count)}, argv), env)
    found = json.loads((run_dir / "summary.json").read_text())
    found = {"samples_per_second": found["samples_per_second"], **step_shares(run_dir)}
    print(f"{key}: {found['samples_per_second']:,.0f} samples/s", file=sys.stderr, flush=True)
    return found | {"key": key, "run_dir": str(run_dir)}


def step_shares(run_dir):
    """Rank 0's profiled steps -> the medians of the step (ms) and of the allreduce's share
    of it: wait + transfer, and each part."""
    events = json.loads((run_dir / "trace.json").read_text())["traceEvents"]
    rows = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    steps = defaultdict(lambda: defaultdict(float))  # step -> row -> microseconds
    for e in events:
        if e["ph"] == "X" and e["pid"] == 0:
            steps[e["args"]["step"]][rows[e["tid"]]] += e["dur"]
    per_step = [(s[WAIT] / s["step"], s[TRANSFER] / s["step"], s["step"]) for s in steps.values()]
    return {
        "allreduce_share": median(w + t for w, t, _ in per_step),
        "wait_share": median(w for w, _, _ in per_step),
        "transfer_share": median(t for _, t, _ in per_step),
        "step_ms": median(us for _, _, us in per_step) / 1e3,
    }


# -- rounds of runs, rows, output ----------------------------------------------------------
def benchmark(hosts, work, env, args):
    """Each link measured, then every run, round by round -> (links, runs)."""
    links, runs, qdiscs = {}, [], defaultdict(list)
    sizes = {n: build({"name": n, **NETS[n]}).buffer.grad.nbytes for n in args.nets}
    for link in dict.fromkeys(["none", *args.links]):  # the bare veth always: the reference
        links[link] = measure_link(hosts, work, env, {"1 MiB": 2**20} | sizes, link)
        qdiscs[link] += hosts.qdisc_stats()  # the probe's drops too, then a fresh qdisc
        hosts.unshape()
    for rnd in range(args.repeat):
        for net in args.nets if (1, 1) in args.layouts else []:  # one host: no cable
            runs.append(train(hosts, work, env, (net, (1, 1), "none", "plain", rnd), args.steps))
        for link in args.links:
            hosts.shape(link)
            for net in args.nets:
                for lay, v in ((x, v) for x in args.layouts if x[0] > 1 for v in args.variants):
                    runs.append(train(hosts, work, env, (net, lay, link, v, rnd), args.steps))
            qdiscs[link] += hosts.qdisc_stats()  # before unshape() resets them
            hosts.unshape()
    for link, stats in qdiscs.items():
        links[link]["qdisc"] = {k: sum(s[k] or 0 for s in stats) for k in ("drops", "overlimits")}
    return links, runs


def rows(runs):
    """A row per (net, layout, link): its runs' medians; efficiency vs the net's 1x1 row."""
    groups = defaultdict(list)
    for r in runs:
        groups[r["key"][:4]].append(r)
    table = []
    for (net, (hosts, ranks), link, variant), group in groups.items():
        row = {"net": net, "layout": f"{hosts}x{ranks}", "hosts": hosts, "ranks_per_host": ranks}
        row["variant"] = variant
        row |= {"world_size": hosts * ranks, "link": link, "per_rank_batch": PER_RANK_BATCH}
        row["oversubscribed"] = hosts * ranks > os.cpu_count()
        keys = ("samples_per_second", "step_ms", "allreduce_share", "wait_share", "transfer_share")
        row |= {k: median(r[k] for r in group) for k in keys}
        row["runs"] = [{k: r[k] for k in ("run_dir", *keys)} for r in group]
        table.append(row)
    base = {r["net"]: r["samples_per_second"] for r in table if r["world_size"] == 1}
    for r in table:
        one = base.get(r["net"])
        r["efficiency"] = r["samples_per_second"] / (r["world_size"] * one) if one else None
    return table


def markdown(links, table):
    lines = md_head(LINK_HEAD + "|tbf drops")
    for link, m in links.items():
        a, rate = m["allreduce"]["1 MiB"], m["rate_mbit"]
        mpi, tcp = m["mpi_8B_round_trip_us"]["median"], m["tcp_8B_round_trip_us"]["median"]
        lines.append(
            f"| {link} | {f'{rate:,} Mbit/s' if rate else 'veth'} | {mpi:.0f} µs | {tcp:.0f} µs "
            f"| {a['seconds'] * 1e3:.2f} ms | {a['mbit_s']:,.0f} Mbit/s "
            f"| {a['wire_mbit_s']:,.0f} Mbit/s | {m.get('qdisc', {}).get('drops', '-')} |"
        )
    lines += ["", *md_head(ROW_HEAD)]
    for r in table:
        eff = "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        lines.append(
            f"| {r['net']} | {r['hosts']} x {r['ranks_per_host']} "
            f"| {r['link'] if r['hosts'] > 1 else '- (one host)'} | {r['variant']} "
            f"| {r['samples_per_second']:,.0f} | {r['step_ms']:.1f} ms "
            f"| {100 * r['allreduce_share']:.1f} % | {eff} "
            f"| {'oversubscribed' if r['oversubscribed'] else ''} |"
        )
    return "\n".join(lines)


def md_head(head):
    """A Markdown table's first two lines from "a|b|c": text left, numbers right."""
    return [f"| {head.replace('|', ' | ')} |", "|---|" + "---:|" * head.count("|")]


def layout(text):
    if not (found := re.fullmatch(r"([1-9]\d*)x([1-9]\d*)", text)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOSTSxRANKS, e.g. 2x1")
    return int(found[1]), int(found[2])


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--links", nargs="+", default=list(netns.PROFILES), choices=netns.PROFILES)
    parser.add_argument("--layouts", nargs="+", type=layout, default=[(1, 1), (2, 1), (2, 2)])
    parser.add_argument("--variants", nargs="+", default=["plain"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--keep", type=Path, help="keep the data file and run dirs here")
    parser.add_argument("--out", type=Path, help="write every link and row as JSON")
    parser.add_argument("--probe", nargs="*", help=argparse.SUPPRESS)  # a probe's rank
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.probe is not None:
        return probe([size.split("=") for size in args.probe])
    reason = netns.missing(shaping=True) or (None if mpiexec() else "no mpiexec")
    if reason:
        reason = reason.removeprefix("MULTI-HOST TESTS SKIPPED: ")  # netns speaks to pytest
        print(f"benchmarks/cluster.py needs root, ip and tc (iproute2), and mpiexec: {reason}")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the hosts are removed
    work, load = args.keep or Path(tempfile.mkdtemp(prefix="cluster-bench-")), os.getloadavg()
    try:
        links, table = measure(work, args)
    except KeyboardInterrupt:
        print("benchmarks/cluster.py: stopped by Ctrl-C; the hosts are removed", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(links, table), flush=True)
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k not in ("probe", "out")}
        settings |= {"per_rank_batch": PER_RANK_BATCH, "cores": os.cpu_count()}
        settings["load_average"] = {"before": load[0], "after": os.getloadavg()[0]}
        record = {"settings": settings, "links": links, "rows": table}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0


def measure(work, args):
    """Prepare the data file, make the hosts, run everything -> (links, rows)."""
    source = Path(os.environ.get("MPINET_DATA_SOURCE") or shared_data_dir()) / "mnist"
    work.mkdir(parents=True, exist_ok=True)
    prepare("mnist", source=source, out=work / "mnist-val.h5", val=1000)  # what runs score
    with netns.Hosts(max(2, *(lay[0] for lay in args.layouts))) as hosts:
        env = hosts.environment(job_environment(UCX_TLS="tcp,self"))
        env["MPINET_NETNS_TIMEOUT"] = "900"  # a run's limit, not the tests' 120 s
        links, runs = benchmark(hosts, work, env, args)
    return links, rows(runs)


if __name__ == "__main__":
    sys.exit(main())
