"""`mpinet scale RUN_DIR`: will this run scale, and over which network? A prediction.

    mpinet scale runs/a                                  # 2..1024 ranks over 10gbe and 1gbe
    mpinet scale runs/a --ranks 8,16,64 --link 1gbe --json

From what the run measured and wrote: its trace.json (`mpinet train --profile START:COUNT`)
gives every profiled step's phases on every rank; config.toml the net (so its gradient's
bytes), the batch and the wire dtype. A step on N ranks is predicted as

    compute(b) + allreduce(N, gradient bytes, link) + allreduce(N, 8 bytes, link)

compute(b): the measured step less its allreduce (wait and transfer), with the part that grows
with the batch (data, forward, backward) scaled by b / the run's per-rank batch and the rest
(clip, optimizer, bookkeeping) kept per step. The second allreduce is the step's pre-emption
flags (worker/loop.py, stop_requested). The allreduce itself is an alpha-beta model of the
algorithm MPICH's Iallreduce picks (cluster/alphabeta.py). Two ways to grow: weak (every rank
keeps the run's per-rank batch) and strong (the run's global batch, split over N ranks).
Efficiency = samples/s on N ranks / (N x samples/s of one rank with the same total work).

What it leaves out (said in its output too): one rank per host, an uncontended full-duplex
link, balanced ranks (the measured allreduce wait dropped), and no overlap.
"""

import json
import statistics
from collections import defaultdict
from pathlib import Path

from mpinet.cluster.alphabeta import (
    LINKS,
    allreduce_seconds,
    cast_seconds,
    parse_link,
    reduce_rate,
    wire16_seconds,
)
from mpinet.cluster.wire import WIRE_DTYPES

from .cli import print_out
from .files import run_file

HELP = "predict a run's step time, samples/s and efficiency on 2..1024 ranks over a network"
DEFAULT_RANKS = "2,4,8,16,32,64,128,256,512,1024"
PER_SAMPLE = ("data", "forward", "backward")  # rows of the trace that grow with the batch
ALLREDUCE = ("allreduce wait", "allreduce transfer")
FLAGS_BYTES = 8  # the pre-emption flags' allreduce of every step


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run trained with --profile")
    parser.add_argument(
        "--ranks",
        default=DEFAULT_RANKS,
        metavar="N,N,...",
        help=f"world sizes to predict (default {DEFAULT_RANKS})",
    )
    parser.add_argument(
        "--link",
        action="append",
        metavar="NAME|RATE,LATENCY",
        help=f"{', '.join(LINKS)}, or e.g. 25gbit,5us (repeatable; default 10gbe and 1gbe)",
    )
    parser.add_argument(
        "--wire",
        choices=tuple(WIRE_DTYPES),
        help="the gradient's wire to predict with (train.allreduce_dtype; default: the run's)",
    )
    parser.add_argument(
        "--batch",
        type=positive,
        metavar="N",
        help="samples per rank for the weak-scaling rows (default: the run's)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    ranks = parse_ranks(args.ranks)
    links = [parse_link(text) for text in (args.link or ["10gbe", "1gbe"])]
    measured = read_run(Path(args.run_dir))
    wire = args.wire or measured["wire"]
    costs = machine_costs(measured["grad_values"], wire)
    tables = [predict(measured, link, ranks, wire, costs, args.batch) for link in links]
    print_out(
        json.dumps({"run": measured, "tables": tables}, indent=2)
        if args.json
        else markdown(measured, tables)
    )
    return 0


def positive(text):
    """--batch N: a whole number >= 1 (argparse turns the ValueError into its one line)."""
    if int(text) < 1:
        raise ValueError(text)
    return int(text)


def parse_ranks(text):
    """'2,4,8' -> [2, 4, 8]; anything else: one ValueError."""
    try:
        ranks = [int(part) for part in text.split(",")]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 1:
        raise ValueError(
            f"--ranks {text!r}: expected world sizes >= 1 separated by commas, e.g. 2,4,8,16"
        )
    return ranks


def read_run(run_dir):
    """The run's measured step: its phases (median seconds), the batch and gradient bytes."""
    trace_path, config_path = run_dir / "trace.json", run_file(run_dir, "config.toml")
    if not trace_path.is_file():
        raise FileNotFoundError(
            f"{trace_path}: not found; expected the run's profile; train with "
            f"--profile START:COUNT (e.g. --profile 50:20), then run mpinet scale on it"
        )
    try:
        trace = json.loads(trace_path.read_text())
        steps = step_phases(trace["traceEvents"])
        world_size = int(trace["otherData"]["world_size"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{trace_path}: not a trace of mpinet train --profile ({e}); expected the "
            f"file it writes; profile the run again"
        ) from None
    return {
        "run_dir": str(run_dir),
        "world_size": world_size,
        **phase_medians(steps),
        **net_of(config_path, world_size),
    }


def step_phases(events):
    """The trace's complete events -> {(rank, step): {row: seconds summed over its spans}}."""
    rows = {
        e["tid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e["name"] == "thread_name"
    }
    steps = defaultdict(lambda: defaultdict(float))
    for e in events:
        if e.get("ph") == "X":
            steps[(e["pid"], e["args"]["step"])][rows[e["tid"]]] += e["dur"] / 1e6
    if not steps:
        raise ValueError("no spans")
    return steps


def phase_medians(steps):
    """Medians over every rank's profiled steps: the step, its allreduce, its per-sample
    part, and the rest (per step)."""
    step = [p["step"] for p in steps.values()]
    allreduce = [sum(p[row] for row in ALLREDUCE) for p in steps.values()]
    per_sample = [sum(p[row] for row in PER_SAMPLE) for p in steps.values()]
    backward = [p["backward"] for p in steps.values()]
    fixed = [
        p["step"] - a - s for p, a, s in zip(steps.values(), allreduce, per_sample, strict=True)
    ]
    return {
        "profiled_steps": len(steps),
        "step_seconds": statistics.median(step),
        "allreduce_seconds": statistics.median(allreduce),
        "per_sample_seconds": statistics.median(per_sample),
        "fixed_seconds": statistics.median(fixed),
        "backward_seconds": statistics.median(backward),
    }


def net_of(config_path, world_size):
    """The net's name, gradient values and wire bytes, and the per-rank batch, from the
    run's resolved config."""
    import numpy as np

    from mpinet.model.cost import cost

    from .config import load_config, model_spec

    cfg = load_config(base=(config_path.read_text(), str(config_path)))
    values, _ = cost(model_spec(cfg))
    wire = cfg.train.allreduce_dtype
    itemsize = 2 if WIRE_DTYPES[wire] is not None else np.dtype(cfg.model.dtype).itemsize
    return {
        "model": cfg.model.name,
        "grad_values": values,
        "itemsize": np.dtype(cfg.model.dtype).itemsize,
        "grad_bytes": values * itemsize,
        "wire": wire,
        "batch_size": cfg.train.batch_size,
        "per_rank_batch": cfg.train.batch_size / world_size,
    }


def machine_costs(values, wire):
    """What this machine's reduction (bytes/s) and 16-bit casts (seconds) cost, measured now."""
    dtype = WIRE_DTYPES.get(wire)
    return {
        "reduce_bytes_per_second": reduce_rate(values),
        "cast_seconds": cast_seconds(values, dtype) if dtype is not None else 0.0,
    }


def compute_seconds(measured, per_rank_batch):
    """One rank's step without its allreduce at `per_rank_batch` samples."""
    scale = per_rank_batch / measured["per_rank_batch"]
    return measured["per_sample_seconds"] * scale + measured["fixed_seconds"]


def predict(measured, link, ranks, wire, costs, batch=None):
    """The rows of one link's table: weak scaling (`batch` samples per rank, default the
    run's) and strong scaling (the run's global batch) per world size."""
    rows = []
    for n in ranks:
        rows.append(
            row(measured, link, n, "weak", batch or measured["per_rank_batch"], wire, costs)
        )
        if measured["batch_size"] >= n:  # strong: at least one sample per rank
            b = measured["batch_size"] / n
            rows.append(row(measured, link, n, "strong", b, wire, costs))
    return {"link": link, "wire": wire, **costs, "rows": rows}


def gradient_mean(measured, n, link, wire, costs):
    """Seconds of the step's gradient mean on n ranks -> (seconds, algorithm)."""
    gamma = costs["reduce_bytes_per_second"]
    if WIRE_DTYPES.get(wire) is not None:  # bfloat16, float16: cluster/wire.py
        return wire16_seconds(n, measured["grad_values"], link, gamma, costs["cast_seconds"])
    nbytes = measured["grad_values"] * measured["itemsize"]
    return allreduce_seconds(n, nbytes, link, gamma, values=measured["grad_values"])


def row(measured, link, n, mode, b, wire, costs):
    """One prediction: step time, samples/s and efficiency of n ranks at b samples each."""
    compute = compute_seconds(measured, b)
    grad, algorithm = gradient_mean(measured, n, link, wire, costs)
    flags, _ = allreduce_seconds(n, FLAGS_BYTES, link, costs["reduce_bytes_per_second"])
    step = compute + grad + flags
    alone = compute_seconds(measured, b * n) if mode == "strong" else compute
    hidden = min(grad, measured["backward_seconds"] * b / measured["per_rank_batch"])
    return {
        "ranks": n,
        "mode": mode,
        "per_rank_batch": b,
        "compute_ms": compute * 1e3,
        "allreduce_ms": (grad + flags) * 1e3,
        "algorithm": algorithm,
        "step_ms": step * 1e3,
        "samples_per_second": n * b / step,
        "efficiency": alone / (n * step) if mode == "strong" else compute / step,
        "overlap_gain": hidden / step,  # the most an allreduce under backward could save
    }


def markdown(measured, tables):
    m = measured
    lines = [
        f"# mpinet scale: {m['run_dir']}",
        "",
        f"{m['model']}: {m['grad_values']:,} gradient values, {m['grad_bytes']:,} bytes on "
        f"the wire (train.allreduce_dtype {m['wire']}); measured on {m['world_size']} rank(s) at "
        f"{m['per_rank_batch']:g} samples per rank, median of {m['profiled_steps']} "
        f"rank-steps: step {m['step_seconds'] * 1e3:.2f} ms = per-sample part "
        f"{m['per_sample_seconds'] * 1e3:.2f} + per-step part {m['fixed_seconds'] * 1e3:.2f} "
        f"+ allreduce {m['allreduce_seconds'] * 1e3:.2f} ms.",
    ]
    for table in tables:
        link = table["link"]
        lines += [
            "",
            f"## {link['name']}: {link['bits_per_second'] / 1e9:g} Gbit/s, "
            f"{link['latency_seconds'] * 1e6:g} us one way; wire {table['wire']}",
            "",
            "| ranks | scaling | batch/rank | compute ms | allreduce ms | algorithm "
            "| step ms | samples/s | efficiency | overlap could save |",
            "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in table["rows"]:
            lines.append(
                f"| {r['ranks']} | {r['mode']} | {r['per_rank_batch']:g} | "
                f"{r['compute_ms']:.2f} | {r['allreduce_ms']:.3f} | {r['algorithm']} | "
                f"{r['step_ms']:.2f} | {r['samples_per_second']:,.0f} | "
                f"{r['efficiency']:.1%} | {r['overlap_gain']:.1%} |"
            )
    lines += ["", ASSUMPTIONS]
    return "\n".join(lines)


ASSUMPTIONS = (  # printed under every table
    "Model: one rank per host, a full-duplex link without contention, balanced ranks (the "
    "measured allreduce wait dropped), the reduction at this machine's measured rate, no "
    "overlap; MPICH's Iallreduce algorithm choice. A prediction: check it against a "
    "measurement (benchmarks/cluster.py) before trusting it."
)
