"""RESULTS.md's per-run rows, generated from the runs' own records (`mpinet report`).

    python benchmarks/results_rows.py runs/mlp10 runs/fashion_mlp10 ...   # Markdown rows

Each row comes from `mpinet report RUN_DIR --json` (worker/report.py): the model and data
set from the resolved config, the optimizer and schedule, the epochs, the world sizes, the
augmentation, the final and best test accuracy and the wall time across legs from
summary.json, the samples/s, the exact command of the first leg, the machine (CPU, BLAS
kernel) it ran on, and the sha256 of the final checkpoint file. Nothing is typed by hand.
"""

import argparse
import tomllib
from pathlib import Path

from mpinet.worker.report import gather

HEADER = (
    "| model | data set | optimizer and schedule | epochs | world size | augmentation "
    "| test accuracy | wall time | samples/s | machine | command | checkpoint sha256 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)
DATASETS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def row(run_dir):
    report = gather(Path(run_dir))
    cfg, summary, leg = tomllib.loads(report["config"]), report["summary"], report["legs"][0]
    model, optim, data, train = cfg["model"], cfg["optim"], cfg["data"], cfg["train"]
    net = model["name"] + (f" {model['hidden']}" if model["name"] == "mlp" else "")
    augment = f"shift {data['shift']} px, rotate {data['rotate']:g}°" if data["augment"] else "none"
    final = next(c for c in report["checkpoints"] if c["file"] == summary["final_checkpoint"])
    minutes, seconds = divmod(summary["wall_seconds"], 60)
    blas = ", ".join(f"{b.get('internal_api')} {b.get('architecture')}" for b in leg["blas"])
    cells = [
        net,
        DATASETS.get(data["dataset"], data["dataset"]),
        f"{optim['name']} lr {optim['lr']:g}, {optim['schedule']}, batch {train['batch_size']}",
        f"{summary['epochs']:.3g}",
        " → ".join(str(n) for n in summary["world_sizes"]),
        augment,
        f"**{100 * summary['final_test_accuracy']:.2f} %** "
        f"(best {100 * summary['best_test_accuracy']:.2f} %)",
        f"{int(minutes)} min {seconds:.0f} s",
        f"{summary['samples_per_second']:,.0f}",
        f"{leg['cpu'].get('model', '?')}, {blas}",
        f"`{launcher(leg)}{leg['command']}`",
        f"`{final['file_sha256']}`",
    ]
    return "| " + " | ".join(cells) + " |"


def launcher(leg):
    """The leg's argv is one rank's: under MPI the job was `mpirun -n N` of it."""
    return f"mpirun -n {leg['world_size']} " if leg["mpi"] != "no MPI" else ""  # LocalComm.library


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args()
    print(HEADER)
    for run_dir in args.run_dirs:
        print(row(run_dir))


if __name__ == "__main__":
    main()
