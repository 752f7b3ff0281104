"""Counters of what the collectives cost: read by the metrics, updated on every call."""


class Tally:
    """One kind of collective: how often, how long inside the call, how many bytes passed."""

    __slots__ = ("calls", "seconds", "nbytes")  # cheap to update on every step

    def __init__(self):
        self.calls = 0
        self.seconds = 0.0
        self.nbytes = 0

    def __repr__(self):
        return f"Tally(calls={self.calls}, seconds={self.seconds:.6f}, nbytes={self.nbytes})"


class CommStats:
    """What the collectives cost, cumulative since the communicator was made.

    `by_name` maps a method name ("allreduce_mean_", "barrier", ...) to its Tally. The time
    inside a call is the wait for the slowest rank plus the transfer.
    """

    def __init__(self):
        self.by_name = {}
        self.last_seconds = 0.0  # the most recent collective, for a per-step histogram

    def __repr__(self):
        return f"CommStats(by_name={self.by_name}, last_seconds={self.last_seconds:.6f})"

    def record(self, name, nbytes, seconds):
        tally = self.by_name.get(name)
        if tally is None:
            tally = self.by_name[name] = Tally()
        tally.calls += 1
        tally.seconds += seconds
        tally.nbytes += nbytes
        self.last_seconds = seconds

    @property
    def allreduce_bytes(self):
        """Bytes of every buffer passed to allreduce_sum_ and allreduce_mean_, and to the
        16-bit wire's alltoall_ and allgather_ (cluster/wire.py), which stand in for one."""
        return sum(
            self.by_name[name].nbytes
            for name in ("allreduce_sum_", "allreduce_mean_", "alltoall_", "allgather_")
            if name in self.by_name
        )

    @property
    def wait_seconds(self):
        """Seconds spent inside collectives of every kind."""
        return sum(tally.seconds for tally in self.by_name.values())
