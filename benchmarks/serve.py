"""`mpinet serve` under load: requests/s, p50 and p99 for a PNG and a 100-digit JSON batch
at 1, 8 and 64 concurrent clients, with and without keep-alive, and the fairness figure.

    python benchmarks/serve.py                          # 3 runs, medians; docs/serve.md
    python benchmarks/serve.py --checkpoint runs/x      # a trained checkpoint of your own
    git show a6dfe9b:worker/serve.py > /tmp/serve_before.py
    python benchmarks/serve.py --fairness --serve-file /tmp/serve_before.py   # another version

The client is our own: one asyncio process (a bounded one: it speaks only what it sends),
next to the server on the same machine. Without --checkpoint a default model (simple_cnn,
untrained: speed does not depend on the weights) is saved to a temporary directory.
Fairness: the p99 of one client sending PNGs one after another while 8 clients send
256-digit batches (the per-request limit) as fast as they are answered.
"""

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Runs the server from a file of another version of worker/serve.py (--serve-file).
RUNNER = """
import argparse, importlib.util, sys
spec = importlib.util.spec_from_file_location("mpinet.worker.serve_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
parser = argparse.ArgumentParser()
module.add_arguments(parser)
sys.exit(module.run(parser.parse_args(sys.argv[2:])))
"""


def default_checkpoint(folder):
    from mpinet.model import build
    from mpinet.model.checkpoint import save
    from mpinet.model.optimizers import create
    from mpinet.worker.config import load_config, model_spec, to_toml

    config = load_config(None, [])
    net = build(model_spec(config), seed=0)
    return save(
        Path(folder) / "ckpt-00000000.h5",
        net,
        create("adam", lr=0.001),
        {"step": 0, "epoch": 0, "config": to_toml(config)},
    )


def payloads():
    """(PNG of a drawn 7, JSON of 100 digits, JSON of 256 digits) as request bodies."""
    image = Image.new("L", (200, 160), 235)
    ImageDraw.Draw(image).line([(60, 30), (140, 30), (90, 140)], fill=20, width=14)
    out = io.BytesIO()
    image.save(out, "PNG")
    rng = np.random.default_rng(0)

    def batch(n):
        return json.dumps({"inputs": rng.integers(0, 256, (n, 784)).tolist()}).encode()

    return (
        (out.getvalue(), "image/png"),
        (batch(100), "application/json"),
        (batch(256), "application/json"),
    )


def raw_request(body, content_type, keep_alive):
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n" + ("" if keep_alive else "Connection: close\r\n")
    )
    return head.encode() + b"\r\n" + body


async def exchange(reader, writer, request):
    """Send one request, read its answer -> (status, the server keeps the connection)."""
    writer.write(request)
    await writer.drain()
    version, status = (await reader.readline()).split()[:2]
    length, connection = 0, ""
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "connection":
            connection = value.strip().lower()
    await reader.readexactly(length)
    kept = connection == "keep-alive" or (version == b"HTTP/1.1" and connection != "close")
    return int(status), kept


async def client(port, request, keep_alive, until, latencies, errors):
    """Requests one after another until `until`; a new connection when the last closed."""
    connection = None
    while time.perf_counter() < until:
        start = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            status, kept = await exchange(*connection, request)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            status, kept = 0, False
        latencies.append(time.perf_counter() - start)
        errors[0] += status != 200
        if not (kept and keep_alive) and connection is not None:
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


async def load(port, groups, seconds):
    """groups: [(clients, request, keep_alive)] -> per group (latencies, errors)."""
    until = time.perf_counter() + seconds
    results = [([], [0]) for _ in groups]
    tasks = [
        client(port, request, keep, until, *results[g])
        for g, (clients, request, keep) in enumerate(groups)
        for _ in range(clients)
    ]
    await asyncio.gather(*tasks)
    return results


def figures(latencies, errors, seconds):
    ms = np.array(latencies) * 1e3
    return {
        "rps": len(ms) / seconds,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def start_server(checkpoint, port, serve_file):
    command = (
        [sys.executable, "-c", RUNNER, serve_file]
        if serve_file
        else [sys.executable, "-m", "mpinet.worker", "serve"]
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen(
        command + [str(checkpoint), "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start on port {port}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrix_run(port, bodies, seconds):
    rows = {}
    for name, (body, kind) in zip(("PNG", "JSON x100"), bodies[:2], strict=True):
        for clients in (1, 8, 64):
            for keep in (True, False):
                request = raw_request(body, kind, keep)
                [(latencies, errors)] = asyncio.run(load(port, [(clients, request, keep)], seconds))
                rows[(name, clients, keep)] = figures(latencies, errors, seconds)
    return rows


def fairness_run(port, bodies, seconds):
    png = raw_request(*bodies[0], True)
    [(alone, alone_errors)] = asyncio.run(load(port, [(1, png, True)], seconds / 2))
    small, large = asyncio.run(
        load(port, [(1, png, True), (8, raw_request(*bodies[2], True), True)], seconds)
    )
    return {
        "alone": figures(alone, alone_errors, seconds / 2),
        "small": figures(*small, seconds),
        "large": figures(*large, seconds),
    }


def median_rows(runs):
    return {
        key: {k: statistics.median(run[key][k] for run in runs) for k in runs[0][key]}
        for key in runs[0]
    }


def print_matrix(rows):
    print("| body | clients | keep-alive | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (name, clients, keep), f in rows.items():
        print(
            f"| {name} | {clients} | {'yes' if keep else 'no'} | {f['rps']:.0f} | "
            f"{f['p50']:.1f} | {f['p99']:.1f} | {f['errors']:.0f} |"
        )


def print_fairness(rows):
    print("| client | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (
        ("alone", "1 PNG client alone"),
        ("small", "1 PNG client, with 8 below"),
        ("large", "8 clients of 256-digit batches"),
    ):
        f = rows[name]
        print(f"| {label} | {f['rps']:.1f} | {f['p50']:.1f} | {f['p99']:.1f} | {f['errors']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="default: an untrained simple_cnn")
    parser.add_argument("--serve-file", help="run the server from this copy of serve.py")
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are printed)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--fairness", action="store_true", help="only the fairness figure")
    args = parser.parse_args()
    bodies = payloads()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or default_checkpoint(folder)
        matrices, fairness = [], []
        for _ in range(args.runs):
            port = free_port()
            proc = start_server(checkpoint, port, args.serve_file)
            try:
                if not args.fairness:
                    matrices.append(matrix_run(port, bodies, args.seconds))
                fairness.append(fairness_run(port, bodies, 3 * args.seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"checkpoint {checkpoint}; medians of {args.runs} runs of {args.seconds:g} s\n")
    if matrices:
        print_matrix(median_rows(matrices))
        print()
    print_fairness(median_rows(fairness))


if __name__ == "__main__":
    main()
