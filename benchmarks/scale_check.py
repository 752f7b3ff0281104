"""`mpinet scale` against the shaped-link cluster: predicted vs measured, and the README table.

    python benchmarks/scale_check.py /work/runs/cluster/results.json      # after cluster.py

From benchmarks/cluster.py's results: for each net, its three 1 host x 1 rank runs (their
trace.json) are what `mpinet scale` predicts from, exactly as a user runs it (a subprocess);
each 2 hosts x 1 rank row measured on a shaped link is what the prediction is checked
against: the median step time, predicted for 2 ranks at the same 50 samples per rank (weak).
Two links are predicted per profile:
    nominal   the profile's rate and the veth's measured one-way latency
    fitted    alpha and beta fitted (least squares, t = 2 alpha + m beta: Rabenseifner on 2
              ranks) to the link probe's allreduces of 4 sizes: what the link really does
The 2 x 2 rows (4 ranks on 2 cores, 2 per host talking through memory) are outside the
model (one rank per host, a core each) and are listed as not predicted. Then the predicted
weak-scaling efficiency of each net at 8, 16, 64 and 256 ranks over 10gbe and 1gbe.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import median

import numpy as np

MPINET = [sys.executable, "-m", "mpinet.worker"]
TABLE_RANKS = "8,16,64,256"


def fit(allreduce):
    """(alpha seconds, beta seconds per byte) of t = 2 alpha + m beta over the probe's sizes."""
    m = np.array([entry["bytes"] for entry in allreduce.values()], float)
    t = np.array([entry["seconds"] for entry in allreduce.values()], float)
    (two_alpha, beta), *_ = np.linalg.lstsq(np.stack([np.ones_like(m), m], 1), t, rcond=None)
    return max(two_alpha / 2, 1e-7), beta


def link_texts(link):
    """{'nominal': 'RATEmbit,LATus' or None, 'fitted': ...} for mpinet scale --link."""
    alpha, beta = fit(link["allreduce"])
    fitted = f"{8 / beta / 1e6:.1f}mbit,{alpha * 1e6:.1f}us"
    rate = link.get("rate_mbit")
    nominal = f"{rate}mbit,{link['latency_us']:.1f}us" if rate else None
    return {"nominal": nominal, "fitted": fitted}


def predict(run_dir, links, ranks="2"):
    """mpinet scale RUN_DIR --json over `links` -> its tables (the user's command)."""
    argv = [*MPINET, "scale", str(run_dir), "--ranks", ranks, "--json"]
    for text in links:
        argv += ["--link", text]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)["tables"]


def weak_step(table, n=2):
    return next(r for r in table["rows"] if r["ranks"] == n and r["mode"] == "weak")["step_ms"]


def check(results):
    """Rows: (net, link, measured ms, {kind: (predicted ms, error)})."""
    rows = [r for r in results["rows"] if r.get("variant", "plain") == "plain"]
    singles = {
        r["net"]: [run["run_dir"] for run in r["runs"]] for r in rows if r["layout"] == "1x1"
    }
    out = []
    for r in rows:
        if r["layout"] != "2x1":
            continue
        texts = link_texts(results["links"][r["link"]])
        kinds = [k for k, text in texts.items() if text]
        per_run = [predict(d, [texts[k] for k in kinds]) for d in singles[r["net"]]]
        found = {}
        for i, kind in enumerate(kinds):
            step = median(weak_step(tables[i]) for tables in per_run)
            found[kind] = (step, step / r["step_ms"] - 1)
        out.append((r["net"], r["link"], r["step_ms"], texts, found))
    return out


def check_markdown(checked):
    lines = [
        "| net | link | measured step ms | predicted, nominal link | error | predicted, "
        "fitted link | error |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for net, link, measured, texts, found in checked:
        cells = []
        for kind in ("nominal", "fitted"):
            if kind in found:
                step, error = found[kind]
                mark = "" if abs(error) <= 0.2 else " ✗"
                cells += [f"{step:.2f} (`{texts[kind]}`)", f"{error:+.0%}{mark}"]
            else:
                cells += ["-", "-"]
        lines.append(f"| {net} | {link} | {measured:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def efficiency_markdown(results):
    """Per net and named link: the measured 2 hosts x 1 rank efficiency (the 1x1 median step
    over the 2x1 one: weak scaling) next to the predicted 2, 8, 16, 64, 256 ranks."""
    ranks = "2," + TABLE_RANKS
    lines = [
        "| net | link | measured, 2 hosts | " + " | ".join(f"{n}" for n in ranks.split(",")) + " |",
        "|---|---|---:|" + "---:|" * len(ranks.split(",")),
    ]
    plain = [r for r in results["rows"] if r.get("variant", "plain") == "plain"]
    steps = {(r["net"], r["layout"], r["link"]): r["step_ms"] for r in plain}
    for r in (r for r in plain if r["layout"] == "1x1"):
        tables = predict(r["runs"][0]["run_dir"], ["10gbe", "1gbe"], ranks)
        for table in tables:
            name = table["link"]["name"]
            two = steps.get((r["net"], "2x1", name))
            measured = f"{r['step_ms'] / two:.0%}" if two else "-"
            weak = [row for row in table["rows"] if row["mode"] == "weak"]
            cells = " | ".join(f"{row['efficiency']:.0%}" for row in weak)
            lines.append(f"| {r['net']} | {name} | {measured} | {cells} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="benchmarks/cluster.py's --out JSON")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(check_markdown(check(results)))
    print()
    print(efficiency_markdown(results))


if __name__ == "__main__":
    main()
