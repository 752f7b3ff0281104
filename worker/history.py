"""What a run leaves for people: history.jsonl, steps.jsonl, summary.json (progress: progress.py).

    history.jsonl   one object per evaluation (epoch, step, train/test loss and accuracy, ...)
    steps.jsonl     one object every train.log_every steps: step, epoch, train_loss, lr
    environment.jsonl  one object per leg (worker/environment.py)
    summary.json    written last, at every end of a run (finished, pre-empted or stopped)

`epoch` is the same number everywhere (log, metrics, these files): completed epochs as a
fraction, step / steps_per_epoch.
"""

import json
import logging
from pathlib import Path

from .files import append_json, read_jsonl, replace_text

log = logging.getLogger(__name__)
FILES = ("history.jsonl", "steps.jsonl", "environment.jsonl")  # rows kept up to a resume's step


class History:
    """The run's files, written by rank 0 only (run_dir None on the other ranks)."""

    def __init__(self, run_dir, step=0, source=None):
        """Start the files; a resumed run (step > 0) keeps the rows up to `step`, from this
        run directory or, resuming another run's checkpoint, from `source`."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rows = []
        if self.run_dir is None:
            return
        source = Path(source) if source else self.run_dir
        for name in FILES:
            rows = read_jsonl(source / name, up_to_step=step) if step else []
            replace_text(self.run_dir / name, "".join(json.dumps(r) + "\n" for r in rows))
            if name == "history.jsonl":
                self.rows = rows

    def append(self, row):
        self.rows.append(row)
        log.info(
            "eval step=%d epoch=%.2f train_loss=%.4f train_acc=%.4f test_loss=%.4f "
            "test_acc=%.4f samples/s=%.0f",
            row["step"],
            row["epoch"],
            row["train_loss"],
            row["train_accuracy"],
            row["test_loss"],
            row["test_accuracy"],
            row["samples_per_second"],
        )
        if self.run_dir is not None:
            append_json(self.run_dir / "history.jsonl", row)

    def append_step(self, row):
        if self.run_dir is not None:
            append_json(self.run_dir / "steps.jsonl", row)

    def summary(self, **extra):
        last = self.rows[-1] if self.rows else {}
        rates = [r["samples_per_second"] for r in self.rows]
        summary = {
            "final_test_accuracy": last.get("test_accuracy"),
            "best_test_accuracy": max((r["test_accuracy"] for r in self.rows), default=None),
            "final_test_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "samples_per_second": sum(rates) / len(rates) if rates else None,
            **extra,
        }
        if self.run_dir is not None:
            replace_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
