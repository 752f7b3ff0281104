"""`mpinet search`: the book's random search (chapter 6.5), trials in parallel rank groups.

    mpirun -n 4 mpinet search --space space.toml --trials 8 --ranks-per-trial 2 [--halving]

space.toml gives, per config key, how to draw it:

    [optim.lr]
    log_uniform = [1e-4, 1e-1]       # exp(uniform(log a, log b)), the book's 10 ** uniform
    [model.dropout]
    uniform = [0.0, 0.5]
    [model.hidden]
    choice = [[50], [100, 100]]

Every rank draws the same trials from `--seed`, so nothing but results crosses groups. The
world is split into groups of R ranks (`comm.split`); group g runs trials g, g + G, ...
each one an ordinary, resumable run directory SEARCH_DIR/trial-NNN trained data-parallel in
its group. A trial that fails with a user error (a diverging lr: the gradient is not finite)
is recorded as failed and the search goes on. --halving (successive halving): every trial
trains for train.max_steps / 2**(rounds-1) steps, the better half continues (resumed) to
twice that, and so on up to train.max_steps. World rank 0 writes SEARCH_DIR/trials.jsonl,
best.toml (for `mpinet train --config`), search.png and prints the ranked table.
"""

import json
import logging
import math
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from mpinet.cluster import USER_ERRORS, AllRanksError, abort_on_error, auto, on_root
from mpinet.data.atomic import replacing
from mpinet.data.messages import one_line

from .checkpoint_dir import find_resume
from .cli import print_out
from .config import load_config, to_toml
from .figures import search_figure
from .files import replace_text, written
from .log import setup_logging
from .loop import train

HELP = "random search over hyper-parameters, trials in parallel groups of MPI ranks"
KINDS = ("log_uniform", "uniform", "choice")
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument(
        "--space",
        metavar="FILE.toml",
        required=True,
        help="how to draw each config key (log_uniform, uniform, choice)",
    )
    parser.add_argument("--trials", type=int, default=8, help="how many trials (default 8)")
    parser.add_argument(
        "--ranks-per-trial",
        type=int,
        default=1,
        metavar="R",
        help="ranks that train one trial together (default 1)",
    )
    parser.add_argument(
        "--halving",
        action="store_true",
        help="successive halving up to train.max_steps (keep the better half)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--config", metavar="FILE.toml", help="the base config of every trial")
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a base config key (repeatable)",
    )
    parser.add_argument("--data", metavar="FILE.h5", help="the HDF5 data file (= data.path)")
    parser.add_argument(
        "--search-dir",
        metavar="DIR",
        default="search",
        help="where trials, trials.jsonl, best.toml go (default search)",
    )


def run(args):
    comm = auto()
    setup_logging(comm.rank, comm.world_size)
    with abort_on_error(comm):
        overrides = list(args.overrides) + ([f"data.path={args.data!r}"] if args.data else [])
        space = read_space(args.space)
        check_args(args, comm.world_size)
        trials = draw(space, args.trials, args.seed)
        for trial in trials:  # every draw must make a valid config before anything runs
            load_config(args.config, overrides + trial["overrides"])
        base = load_config(args.config, overrides)
        if args.halving and not base.train.max_steps:
            raise ValueError(
                "--halving: train.max_steps is 0; expected the full budget of "
                "a trial in steps; pass --set train.max_steps=N"
            )
        groups = comm.world_size // args.ranks_per_trial
        group = comm.split(color=comm.rank // args.ranks_per_trial)
        budgets = halving_budgets(base.train.max_steps, len(trials)) if args.halving else [0]
        alive = list(range(len(trials)))
        for budget in budgets:
            mine = [i for i in alive if i % groups == comm.rank // args.ranks_per_trial]
            results = [run_trial(args, overrides, trials[i], group, budget) for i in mine]
            for i, result in zip(mine, results, strict=True):
                trials[i].update(result)
            merged = comm.allgather_object(
                [(i, trials[i]) for i in mine] if group.is_root else []
            )  # dist
            for part in merged:
                for i, trial in part:
                    trials[i] = trial
            alive = survivors(trials, alive)
        if comm.is_root:
            finish(Path(args.search_dir), trials, space)
    return 0


def read_space(path):
    try:
        space = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--space {path}: no such file; expected a TOML file of "
            f"[section.key] tables; write one (see README)"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--space {path}: not valid TOML ({e}); fix the file") from None
    flat = {}
    for section, keys in space.items():
        for key, rule in keys.items() if isinstance(keys, dict) else []:
            flat[f"{section}.{key}"] = check_rule(path, f"{section}.{key}", rule)
    if not flat:
        raise ValueError(
            f"--space {path}: no keys; expected tables such as [optim.lr] with "
            f"log_uniform = [1e-4, 1e-1]"
        )
    return flat


def check_rule(path, key, rule):
    kinds = [k for k in KINDS if isinstance(rule, dict) and k in rule]
    if len(kinds) != 1 or len(rule) != 1:
        raise ValueError(
            f"--space {path}: [{key}] is {rule!r}; expected exactly one of "
            f"{', '.join(KINDS)} = [...]"
        )
    kind, values = kinds[0], rule[kinds[0]]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if kind != "choice" and (
        len(values) != 2
        or not numbers
        or values[0] >= values[1]
        or (kind == "log_uniform" and values[0] <= 0)
    ):
        raise ValueError(
            f"--space {path}: [{key}] {kind} = {values!r}; expected [low, high] "
            f"with low < high{' and low > 0' if kind == 'log_uniform' else ''}"
        )
    if kind == "choice" and not values:
        raise ValueError(f"--space {path}: [{key}] choice = []; expected at least one value")
    return kind, values


def check_args(args, world_size):
    if args.trials < 1 or args.ranks_per_trial < 1 or world_size % args.ranks_per_trial:
        raise ValueError(
            f"--trials {args.trials} --ranks-per-trial {args.ranks_per_trial} on "
            f"{world_size} rank(s); expected >= 1 each, and ranks a multiple of "
            f"--ranks-per-trial"
        )


def draw(space, n, seed):
    """n trials: for each, every key of the space drawn from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    trials = []
    for index in range(n):
        values = {}
        for key, (kind, v) in sorted(space.items()):
            if kind == "log_uniform":
                values[key] = float(math.exp(rng.uniform(math.log(v[0]), math.log(v[1]))))
            elif kind == "uniform":
                values[key] = float(rng.uniform(v[0], v[1]))
            else:
                values[key] = v[int(rng.integers(len(v)))]
        trials.append(
            {
                "trial": index,
                "values": values,
                "overrides": [f"{k}={v!r}" for k, v in values.items()],
            }
        )
    return trials


def halving_budgets(max_steps, n):
    """Steps per round: max_steps / 2**(rounds - 1), doubling up to max_steps."""
    rounds = max(1, math.ceil(math.log2(n)) + 1)
    return [max(1, max_steps >> (rounds - 1 - r)) for r in range(rounds)]


def survivors(trials, alive):
    """The better half of the trials still running (failed ones drop out)."""
    ranked = sorted(
        (i for i in alive if trials[i]["status"] == "ok"), key=lambda i: -trials[i]["score"]
    )
    return ranked[: max(1, len(ranked) // 2)]  # the last one left trains to the full budget


def run_trial(args, overrides, trial, group, budget):
    """Train (or, halving, continue) one trial in `group` -> its result fields."""
    run_dir = Path(args.search_dir) / f"trial-{trial['trial']:03d}"
    sets = [*overrides, *trial["overrides"], f"metrics.trial={trial['trial']}"]
    sets += [f"train.max_steps={budget}"] if budget else []

    def read():  # the trial's checkpoint (halving: the last round's) and its config
        ckpt = find_resume(run_dir) if run_dir.is_dir() else None
        base = (ckpt.meta["config"], f"checkpoint {ckpt.path}") if ckpt else None
        return load_config(args.config, sets, base=base), ckpt

    try:
        # dist: the group's rank 0 reads; a bad trial config fails the whole group at once
        start = on_root(group, None, read, share=False)
        cfg = group.bcast_object(start and start[0], root=0)  # dist: one config per group
        summary, _ = train(cfg, group, run_dir, start and start[1])
        if summary is None:  # already trained this far (a rerun of the search)
            summary = json.loads((run_dir / "summary.json").read_text())
    except (AllRanksError, *USER_ERRORS) as e:
        log.warning("trial %d failed: %s", trial["trial"], one_line(e))
        return {
            "status": "failed",
            "error": one_line(e),
            "score": None,
            "run_dir": str(run_dir),
        }
    return {
        "status": "ok",
        "score": summary["final_test_accuracy"],
        "steps": summary["steps"],
        "run_dir": str(run_dir),
        "params_sha256": summary["params_sha256"],
    }


def finish(search_dir, trials, space):
    """trials.jsonl, best.toml, search.png, and the ranked table on stdout."""
    rows = [{k: v for k, v in trial.items() if k != "overrides"} for trial in trials]
    replace_text(search_dir / "trials.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    ok = sorted((t for t in trials if t["status"] == "ok"), key=lambda t: -t["score"])
    if ok:
        best = ok[0]
        cfg = load_config(Path(best["run_dir"]) / "config.toml")
        cfg = replace(cfg, metrics=replace(cfg.metrics, trial=-1))  # for `mpinet train`
        replace_text(search_dir / "best.toml", to_toml(cfg))
    with written(search_dir / "search.png"), replacing(search_dir / "search.png") as tmp:
        search_figure(trials, space).savefig(tmp, dpi=90, format="png")
    lines = [
        "| rank | trial | score | steps | " + " | ".join(sorted(space)) + " |",
        "|---:|---:|---:|---:|" + "---|" * len(space),
    ]
    for place, t in enumerate(ok, 1):
        values = " | ".join(
            f"{t['values'][k]:.4g}" if isinstance(t["values"][k], float) else str(t["values"][k])
            for k in sorted(space)
        )
        lines.append(f"| {place} | {t['trial']} | {t['score']:.4f} | {t['steps']} | {values} |")
    failed = [t["trial"] for t in trials if t["status"] != "ok"]
    lines.append(
        f"\n{len(ok)} trial(s) ranked by the accuracy on data.eval_split, "
        f"{len(failed)} failed{f' {failed}' if failed else ''}; best config: "
        f"{search_dir / 'best.toml'}"
    )
    print_out("\n".join(lines))
