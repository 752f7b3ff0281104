"""Which of mpinet's files one training step passes through, by profiling a real `mpinet train`.

    MPINET_DATA_SOURCE=../shared/data python benchmarks/step_files.py            # simple_cnn
    MPINET_DATA_SOURCE=../shared/data python benchmarks/step_files.py --model mlp

Runs `mpinet train` in this process under cProfile twice, stopped (train.stop_after) after
--steps and after 2 x --steps steps of the same run (no evaluation, no plots), and lists every
project file with a function whose calls grew by at least --steps: called at least once per
step. Setup (the same in both runs: data, network, the learning-rate table) cancels out.
These are the files a reader follows to read one step.
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "worker", "model", "data")


def profile_train(model, steps, run_dir):
    from mpinet.worker.cli import main

    argv = ["train", "--run-dir", str(run_dir), "--set", f"model.name={model!r}"]
    for key, value in (
        ("train.stop_after", steps),
        ("train.max_steps", 500),
        ("train.eval_every", 0),
        ("train.checkpoint_every", 0),
        ("train.plots", "false"),
        ("train.log_every", 100000),
    ):
        argv += ["--set", f"{key}={value}"]
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        main(argv)
    except SystemExit as e:
        if e.code:
            raise
    profiler.disable()
    return {key: value[1] for key, value in pstats.Stats(profiler).stats.items()}


def per_step_functions(calls, more_calls, steps):
    """{project file: [functions called >= `steps` times more in the longer run]}."""
    files = {}
    for (filename, _, name), ncalls in more_calls.items():
        path = Path(filename).resolve()
        ncalls -= calls.get((filename, _, name), 0)
        if ncalls < steps or ROOT not in path.parents:
            continue
        rel = path.relative_to(ROOT)
        if rel.parts[0] in PACKAGES:
            files.setdefault(str(rel), []).append(f"{name} ({ncalls})")
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--steps", type=int, default=100, help="at most 250")
    args = parser.parse_args()
    os.environ.setdefault("MPINET_BLAS_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        calls = profile_train(args.model, args.steps, Path(tmp) / "a")
        more_calls = profile_train(args.model, 2 * args.steps, Path(tmp) / "b")
    files = per_step_functions(calls, more_calls, args.steps)
    for name in sorted(files):
        print(f"{name}: {', '.join(sorted(files[name]))}")
    print(
        f"{len(files)} project files per training step of {args.model} "
        f"({args.steps} steps profiled)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
