"""What a run leaves for people: history.jsonl, summary.json, and progress while it runs."""

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("mpinet.worker")


class History:
    """history.jsonl (one object per evaluation) and summary.json, written by rank 0 only."""

    def __init__(self, run_dir, after_step=0):
        """after_step > 0 (a resumed run): keep the rows up to that step, drop later ones."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rows = []
        path = self.run_dir / "history.jsonl" if self.run_dir is not None else None
        if after_step and path is not None and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line]
            self.rows = [r for r in rows if r["step"] <= after_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
            tmp.replace(path)

    def append(self, row):
        self.rows.append(row)
        log.info("eval step=%d epoch=%.2f train_loss=%.4f train_acc=%.4f test_loss=%.4f "
                 "test_acc=%.4f samples/s=%.0f", row["step"], row["epoch"], row["train_loss"],
                 row["train_accuracy"], row["test_loss"], row["test_accuracy"],
                 row["samples_per_second"])
        if self.run_dir is not None:
            with open(self.run_dir / "history.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def summary(self, **extra):
        last = self.rows[-1] if self.rows else {}
        summary = {
            "final_test_accuracy": last.get("test_accuracy"),
            "best_test_accuracy": max((r["test_accuracy"] for r in self.rows), default=None),
            "final_test_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "samples_per_second": (sum(r["samples_per_second"] for r in self.rows)
                                   / len(self.rows) if self.rows else None),
            **extra,
        }
        if self.run_dir is not None:
            tmp = self.run_dir / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            tmp.replace(self.run_dir / "summary.json")
        return summary


class Progress:
    """A tqdm bar on rank 0 when stderr is a terminal, else one log line every N steps."""

    def __init__(self, total, every, active, done=0):
        self.every, self.active = every, active
        self.bar = None
        if active and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True)

    def update(self, step, epoch, loss, step_seconds, allreduce_seconds):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
        elif self.active and step % self.every == 0:
            log.info("step=%d epoch=%d loss=%.4f step_ms=%.1f allreduce_ms=%.2f", step,
                     epoch + 1, loss, 1e3 * step_seconds, 1e3 * allreduce_seconds)

    def close(self):
        if self.bar is not None:
            self.bar.close()
