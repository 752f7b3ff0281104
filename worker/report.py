"""`mpinet report RUN_DIR`: what someone else needs to reproduce a run, as Markdown or JSON.

    mpinet report runs/a [--json]

From what the run wrote: config.toml, environment.jsonl (each leg's command, versions, MPI,
BLAS kernel, CPU, hosts), summary.json, history.jsonl, the checkpoints (their sha256 and
parameters' sha256) and the data file's own record (fingerprint, the sources' sha256). It
ends with a command that re-runs a short prefix of the run and the parameter checksum that
prefix must end with: bitwise, on the same world size, MPI, BLAS kernel and data.
"""

import hashlib
import json
import shlex
import tomllib
from pathlib import Path

import h5py

from mpinet.model.checkpoint import read

from .checkpoint_dir import checkpoint_files
from .cli import print_out
from .files import read_jsonl

HELP = "a reproducibility report of a run: command, versions, machine, data, checkpoints"


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory `mpinet train` wrote")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    report = gather(Path(args.run_dir))
    print_out(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


def gather(run_dir):
    """Everything the report says, as a dict (the --json output)."""
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no config.toml; expected a run directory; pass "
            f"one that `mpinet train --run-dir` wrote"
        )
    config_text = config_path.read_text()
    config = tomllib.loads(config_text)
    legs = read_jsonl(run_dir / "environment.jsonl")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    checkpoints = [checkpoint_row(path) for path in checkpoint_files(run_dir / "checkpoints")]
    data = data_record(summary["data"] if summary else config["data"]["path"])
    return {
        "run_dir": str(run_dir),
        "config": config_text,
        "legs": legs,
        "summary": summary,
        "seeds": seeds(config),
        "data": data,
        "checkpoints": checkpoints,
        "verify": verify(run_dir, config, legs, checkpoints, data),
    }


def checkpoint_row(path):
    """A checkpoint's step, test accuracy, file sha256 and parameters' sha256 (the checksum
    `mpinet train` logs as "final parameters sha256=...")."""
    ckpt = read(path)
    params = hashlib.sha256(b"".join(a.tobytes() for a in ckpt.params.values())).hexdigest()
    return {
        "file": str(path),
        "step": int(ckpt.meta["step"]),
        "test_accuracy": ckpt.meta.get("test_accuracy"),
        "file_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "params_sha256": params,
    }


def data_record(path):
    """The data file's dataset, fingerprint and the published sha256 of its sources."""
    if not path:
        return {"path": None, "note": "the cache's default file (data.path unset)"}
    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return {"path": str(path), "note": "not readable here"}
    return {
        "path": str(path),
        "dataset": str(attrs.get("dataset")),
        "fingerprint": str(attrs.get("fingerprint")),
        "sources": {
            k.removeprefix("sha256_"): str(v) for k, v in attrs.items() if k.startswith("sha256_")
        },
    }


def seeds(config):
    seed = config["train"]["seed"]
    return {
        "weights": seed,
        "data order": f"(seed, epoch) = ({seed}, epoch)"
        + (", per rank" if config["data"]["order"] == "shard" else ""),
        "dropout": f"(seed, rank) = ({seed}, rank)",
    }


def verify(run_dir, config, legs, checkpoints, data):
    """The command that re-trains the first checkpointed prefix, and what it must print."""
    if not checkpoints or not legs:
        return None
    first = checkpoints[0]
    world = legs[0]["world_size"]
    argv = [
        "mpinet",
        "train",
        "--config",
        str(run_dir / "config.toml"),
        "--run-dir",
        f"{run_dir}-verify",
        "--set",
        f"train.stop_after={first['step']}",
        "--set",
        "train.plots=false",
    ]
    if data.get("path"):
        argv[2:2] = ["--data", data["path"]]
    if world > 1:
        argv = ["mpirun", "-n", str(world), *argv]
    same = {k: legs[0].get(k) for k in ("world_size", "mpi")}
    same["blas"] = [b.get("architecture") for b in legs[0].get("blas", [])]
    return {
        "argv": argv,
        "command": shlex.join(argv),
        "step": first["step"],
        "expected_params_sha256": first["params_sha256"],
        "requires": same,
        "resumed_legs": len(legs) > 1,
    }


def markdown(r):
    """The report as Markdown: sections a person reads top to bottom."""
    s, lines = r["summary"], [f"# Run {r['run_dir']}", ""]
    if s:
        lines += [
            "## Result",
            "",
            f"- final test accuracy {s['final_test_accuracy']}, best "
            f"{s['best_test_accuracy']}; {s['steps']} of {s['total_steps']} steps "
            f"({s['epochs']:.2f} epochs), complete: {s['complete']}",
            f"- training wall time across legs: {s['wall_seconds']:.1f} s; "
            f"world sizes {s['world_sizes']}",
            "",
        ]
    lines += [
        "## Legs",
        "",
        "| started | at step | world size | hosts | command |",
        "|---|---:|---:|---|---|",
    ]
    for leg in r["legs"]:
        lines.append(
            f"| {leg['started']} | {leg['step']} | {leg['world_size']} | "
            f"{', '.join(sorted(set(leg['hosts'])))} | `{leg['command']}` |"
        )
    lines += [""] + software(r["legs"][-1] if r["legs"] else None)
    d = r["data"]
    lines += [
        "## Data",
        "",
        f"- file {d.get('path')}: {d.get('dataset', d.get('note'))}, "
        f"fingerprint {d.get('fingerprint')}",
    ]
    lines += [f"- source {name}: sha256 {sha}" for name, sha in d.get("sources", {}).items()]
    lines += ["", "## Seeds", ""] + [f"- {k}: {v}" for k, v in r["seeds"].items()]
    lines += [
        "",
        "## Checkpoints",
        "",
        "| file | step | test accuracy | file sha256 | parameters sha256 |",
        "|---|---:|---:|---|---|",
    ]
    lines += [
        f"| {c['file']} | {c['step']} | {c['test_accuracy']} | {c['file_sha256'][:16]} "
        f"| {c['params_sha256'][:16]} |"
        for c in r["checkpoints"]
    ]
    lines += ["", "## Verify", ""] + verify_text(r["verify"])
    lines += ["", "## Config", "", "```toml", r["config"].rstrip(), "```"]
    return "\n".join(lines)


def software(leg):
    if leg is None:
        return [
            "## Software and machine",
            "",
            "- not recorded (a run from before environment.jsonl)",
            "",
        ]
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} kernel {b['architecture']}, "
        f"{b['num_threads']} thread(s)"
        for b in leg["blas"]
    )
    packages = ", ".join(f"{k} {v}" for k, v in leg["packages"].items())
    cpu = leg["cpu"]
    return [
        "## Software and machine",
        "",
        f"- Python {leg['python']}; {packages}",
        f"- mpinet commit: {leg['git_commit'] or 'not from a git checkout'}",
        f"- MPI: {leg['mpi']}",
        f"- BLAS: {blas or 'none found'}",
        f"- CPU: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores usable); flags: "
        f"{' '.join(cpu['flags'])}",
        "",
    ]


def verify_text(v):
    if v is None:
        return ["Nothing to verify: the run has no checkpoint (or no environment record)."]
    return [
        f"Re-run the first {v['step']} steps (the schedule unchanged) and compare:",
        "",
        f"    {v['command']}",
        "",
        f"It must log `final parameters sha256={v['expected_params_sha256']}` (the "
        f"checkpoint of step {v['step']}). Bitwise only with the same world size, MPI "
        f"and BLAS kernel as recorded ({v['requires']}) and the same data file: another "
        f"kernel or world size adds the same sums in another order. Wall times, "
        f"samples/s and timestamps are not reproducible.",
    ]
