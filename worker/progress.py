"""Progress of a training run on rank 0: a tqdm bar when stderr is a terminal, else one log
line every train.log_every steps; and every log_every steps a row of steps.jsonl (the mean
training loss since the last row)."""

import logging
import sys

log = logging.getLogger(__name__)


class Progress:
    """update() is called every `every` steps: 1 for a bar, else train.log_every."""

    def __init__(self, total, log_every, active, history, done=0):
        self.log_every, self.active, self.history = log_every, active, history
        self.bar = None
        if active and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True)
        self.every = 1 if self.bar is not None else log_every

    def update(self, step, epoch, loss, sums, lr, step_seconds, allreduce_seconds):
        """Show step `step` (just completed, its loss `loss`); every log_every steps, log it
        and write the steps.jsonl row of the steps since the last one (sums.progress_*,
        reset here)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{loss:.4f}", lr=f"{lr:.3g}")
        if step % self.log_every:
            return
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
            "train_loss": sums.progress_loss / sums.progress_steps,
            "lr": lr,
        }
        sums.progress_loss, sums.progress_steps = 0.0, 0
        self.history.append_step(row)

    def close(self):
        if self.bar is not None:
            self.bar.close()
