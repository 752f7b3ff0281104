"""`mpinet` with one fault injected, for tests (fault injection is not part of the product).

    python tests/faulty_mpinet.py RANK:STEP:KIND train ...     # under mpirun like `mpinet`

The fault fires in the gradient allreduce of training step STEP (0-based, as the loop's
`comm.step` counts, across resumes) on rank RANK, once. KIND:
  raise    an exception, as a bug would: a traceback, every rank stops (exit 1)
  kill     SIGKILL, as the OOM killer or a lost node would: no goodbye, no checkpoint
  diverge  this replica's gradient nudged after the allreduce, for train.check_every to find
"""

import os
import signal
import sys

from mpinet.worker import train as train_command
from mpinet.worker.cli import main

KINDS = ("raise", "kill", "diverge")


class FaultyComm:
    """The real Comm, except for one allreduce_mean_ of one rank at one step."""

    def __init__(self, comm, rank, step, kind):
        self.__dict__.update(inner=comm, fault=(rank, step, kind), fired=False)

    def __getattr__(self, name):  # everything else is the real Comm's
        return getattr(self.inner, name)

    def __setattr__(self, name, value):  # comm.step, comm.timeout: the real Comm's too
        setattr(self.inner, name, value)

    def allreduce_mean_(self, buf):
        rank, step, kind = self.fault
        fire = not self.fired and self.inner.rank == rank and self.inner.step == step
        if fire:
            self.__dict__["fired"] = True
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "raise":
                raise RuntimeError(f"fault injection: step {step} on rank {rank}")
        self.inner.allreduce_mean_(buf)
        if fire:  # diverge: after the allreduce, so only this replica's update differs
            buf[0] += 1


def faulty_auto(rank, step, kind):
    real_auto = train_command.auto
    return lambda *args, **kwargs: FaultyComm(real_auto(*args, **kwargs), rank, step, kind)


if __name__ == "__main__":
    rank, step, kind = sys.argv[1].split(":")
    if kind not in KINDS:
        sys.exit(f"faulty_mpinet.py: kind {kind!r}; expected one of {', '.join(KINDS)}")
    train_command.auto = faulty_auto(int(rank), int(step), kind)
    sys.exit(main(sys.argv[2:]))
