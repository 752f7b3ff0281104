"""16-bit weights: file size and test accuracy of each checkpoint, float32 vs float16/bfloat16.

    python benchmarks/export16.py RUN_DIR_OR_CHECKPOINT ... [--data FILE.h5]

For each checkpoint: `mpinet export --format h5 --dtype D` into a temporary folder, then the
test accuracy of both files over the whole test split of the run's data file (as
`mpinet eval` computes it), as a Markdown table. A measurement, not a test.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from mpinet.data import eval_share
from mpinet.model.checkpoint import network, read, resolve
from mpinet.worker.evaluate import summarise, tally
from mpinet.worker.predict import checkpoint_config, data_path, trained_on

DTYPES = ("float16", "bfloat16")


def accuracy(path, data=None):
    ckpt = read(path)
    normalize = checkpoint_config(ckpt).get("data", {}).get("normalize", "unit")
    shape = "flat" if ckpt.spec["name"] == "mlp" else "image"
    x, t = eval_share(data_path(ckpt, data), "test", 0, 1, shape=shape, normalize=normalize)
    counts, loss = tally(network(ckpt), x, t)
    return summarise(counts, loss[0], path, data, "test")["accuracy"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run directories")
    p.add_argument("--data", help="the data file (default: the one each run trained on)")
    args = p.parse_args(argv)
    print(
        "| model | data set | checkpoint MB (float32 + optimizer) | float32 accuracy | "
        "16-bit | MB | accuracy | change (samples) |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for given in args.checkpoints:
            path = resolve(given)
            ckpt = read(path)
            base = accuracy(path, args.data)
            for dtype in DTYPES:
                out = Path(tmp) / f"{path.stem}-{dtype}.h5"
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "mpinet.worker",
                        "export",
                        str(path),
                        "--format",
                        "h5",
                        "--dtype",
                        dtype,
                        "--out",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                )
                small = accuracy(out, args.data)
                print(
                    f"| {ckpt.spec['name']} | {trained_on(ckpt)} | "
                    f"{path.stat().st_size / 1e6:.2f} | {base:.4f} | {dtype} | "
                    f"{out.stat().st_size / 1e6:.2f} | {small:.4f} | "
                    f"{round((small - base) * 10000):+d} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
