"""The loop's schedule of evaluations and checkpoints (the loop itself: tests/integration)."""

import pytest

from mpinet.worker.loop import due


@pytest.mark.parametrize(
    "every, expected",
    [
        (0, [10, 20, 25]),  # epoch ends (10 steps each) and the last step
        (4, [4, 8, 10, 12, 16, 20, 24, 25]),
        (10, [10, 20, 25]),
    ],
)
def test_evaluations_fall_on_epoch_ends_the_last_step_and_every_n(every, expected):
    assert [s for s in range(1, 26) if due(s, every, 10, 25)] == expected
