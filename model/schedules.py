"""Learning-rate schedules: pure functions of the step, so a resumed run needs no state."""

import math

SCHEDULES = ("constant", "step", "cosine")


def learning_rate(
    step,
    base_lr,
    schedule="constant",
    total_steps=1,
    warmup_steps=0,
    step_size=1000,
    gamma=0.1,
    min_lr=0.0,
):
    """The learning rate for optimizer step `step` (0-based).

    constant: base_lr. step: base_lr * gamma ** (step // step_size). cosine: from base_lr
    down to min_lr over total_steps. A linear warmup from base_lr / warmup_steps up to the
    schedule's value covers the first warmup_steps steps, whatever the schedule.
    """
    if schedule == "constant":
        lr = base_lr
    elif schedule == "step":
        lr = base_lr * gamma ** (step // step_size)
    elif schedule == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {list(SCHEDULES)}")
    if step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr
