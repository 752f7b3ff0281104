"""What a run leaves for people: history.jsonl, steps.jsonl, summary.json, and progress.

    history.jsonl   one object per evaluation (epoch, step, train/test loss and accuracy, ...)
    steps.jsonl     one object every train.log_every steps: step, epoch, train_loss, lr
    environment.jsonl  one object per leg (worker/environment.py)
    summary.json    written last, at every end of a run (finished, pre-empted or stopped)

`epoch` is the same number everywhere (log, metrics, these files): completed epochs as a
fraction, step / steps_per_epoch.
"""

import json
import logging
import sys
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


class Progress:
    """A tqdm bar on rank 0 when stderr is a terminal, else one log line every N steps; and
    every N steps a row for steps.jsonl: the mean training loss since the last row."""

    def __init__(self, total, every, active, done=0):
        self.every, self.active = every, active
        self.loss_sum, self.count = 0.0, 0
        self.bar = None
        if active and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True)

    def update(self, step, epoch, loss, lr, step_seconds, allreduce_seconds):
        """Show step `step` (just completed); -> a steps.jsonl row every N steps, else None."""
        self.loss_sum, self.count = self.loss_sum + loss, self.count + 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{loss:.4f}", lr=f"{lr:.3g}")
        if step % self.every:
            return None
        if self.bar is None and self.active:
            log.info(
                "step=%d epoch=%.2f loss=%.4f lr=%.3g step_ms=%.1f allreduce_ms=%.2f",
                step,
                epoch,
                loss,
                lr,
                1e3 * step_seconds,
                1e3 * allreduce_seconds,
            )
        row = {
            "step": step,
            "epoch": round(epoch, 4),
            "train_loss": self.loss_sum / self.count,
            "lr": lr,
        }
        self.loss_sum, self.count = 0.0, 0
        return row

    def close(self):
        if self.bar is not None:
            self.bar.close()
