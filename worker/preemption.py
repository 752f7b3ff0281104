"""Pre-emption: the signals that stop a training run at a step boundary, checkpointed.

SIGTERM (Slurm's and Kubernetes' notice before a kill) and SIGUSR1 (`scancel --signal`,
`#SBATCH --signal=USR1@60`) end the run with exit code 75 (EX_TEMPFAIL: "run me again");
Ctrl-C with 130. Either way every rank saves the same checkpoint first.
"""

import signal

import numpy as np

from mpinet.cluster import EXIT_INTERRUPTED, EXIT_PREEMPTED


class Preemption:
    """SIGTERM / SIGUSR1 / SIGINT (Ctrl-C) on any rank -> every rank checkpoints at the next
    step boundary; a second Ctrl-C stops at once (KeyboardInterrupt: one line, exit 130).

    The handler only sets a flag; the loop sums `flags` over the ranks (one tiny allreduce
    per step), so all ranks decide together, at the same step; `reason(summed)` says why.
    Under mpirun, Ctrl-C reaches mpiexec, which forwards SIGINT to every rank.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    REASONS = (
        ("SIGTERM", EXIT_PREEMPTED),
        ("SIGUSR1", EXIT_PREEMPTED),
        ("Ctrl-C", EXIT_INTERRUPTED),
    )

    def __init__(self):
        self.flags = np.zeros(len(self.SIGNALS))
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        i = self.SIGNALS.index(signum)
        if signum == signal.SIGINT and self.flags[i]:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.flags[i] = 1

    def reason(self, summed):
        """(what stopped the run, its exit code) for the flags summed over every rank."""
        stops = [reason for reason, flag in zip(self.REASONS, summed, strict=True) if flag > 0]
        return stops[-1]  # Ctrl-C wins: the person at the terminal

    def close(self):
        """Restore the handlers, except after a Ctrl-C: the run is stopping for it, and a
        second one while it finishes (summary, metrics) must still stop it at once."""
        for s, handler in self.previous.items():
            if not (s == signal.SIGINT and self.flags[self.SIGNALS.index(s)]):
                signal.signal(s, handler)
