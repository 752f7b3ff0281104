"""`mpinet train --profile START:COUNT` (train.profile): every rank's spans, one trace.

Every rank records the spans of the COUNT steps from step START (counted from 0, as the loop
counts them): the data wait, each layer's forward and backward, the allreduce, the clip, the
optimizer and the bookkeeping after the step (after_step). After the last of them every rank
sends its spans to rank 0, which writes RUN_DIR/trace.json (worker/trace.py: the Chrome
trace format, for Perfetto or chrome://tracing).

No cost when off: the loop makes a TracedLaps only for a step inside the window (a range
test), and a plain loop.Laps otherwise, whose `trace` is None; the network times its layers
only when given a recorder (model/network.py, `spans=`). Inside the window a span is one
perf_counter() call and one list append (about 1 us; 2 per layer and 10 more a step).

Clocks: at the start and at the end of the window rank 0 measures every rank's clock
against its own (cluster/clock.py: the quickest of a few ping-pongs); rank 0 maps each
rank's times onto its own clock, drifting linearly between the two measurements.
"""

import logging
import re
import time
from pathlib import Path

from mpinet.cluster import AllRanksError
from mpinet.cluster.clock import clock_offsets

from .files import replace_text
from .trace import trace_json

log = logging.getLogger(__name__)

MAX_EVENTS = 100_000  # a trace of this many events: about 13 MB of JSON
PATTERN = re.compile(r"(\d+):(\d+)", re.ASCII)


def parse_profile(text):
    """'START:COUNT' -> (start, count); '' -> None (off); anything else: one ValueError."""
    if text == "":
        return None
    match = PATTERN.fullmatch(text)
    if match is None or int(match[2]) == 0:
        raise ValueError(
            f"train.profile: got {text!r}; expected START:COUNT (COUNT >= 1 steps from "
            f"step START, counted from 0), e.g. --profile 100:20, or '' (off)"
        )
    return int(match[1]), int(match[2])


def events_per_step(net, accumulate):
    """The most spans one rank records in a step: per micro-batch the data wait, each layer
    forward and backward, the loss both ways and the weight decay; then the allreduce's
    wait and transfer, the clip, the optimizer, the bookkeeping and the step itself."""
    return accumulate * (1 + 2 * (len(net.layers) + 1) + 1) + 6


class Profile:
    """This rank's --profile window: `steps` (a range; empty when off), its spans, and
    after its last step (or a stop inside it) the gather and RUN_DIR/trace.json (rank 0).

    phases: the loop's phases (loop.PHASES), which TracedLaps.seconds counts as Laps does."""

    def __init__(self, cfg, comm, run, run_dir, phases):
        self.comm, self.path, self.steps = comm, Path(run_dir) / "trace.json", range(0)
        self.phases = phases
        window = parse_profile(cfg.train.profile)
        if window is None:
            return
        start, count = window
        per_step = comm.world_size * events_per_step(run.net, cfg.optim.accumulate)
        if count * per_step > MAX_EVENTS:  # the same numbers on every rank: all raise it
            raise AllRanksError(
                f"train.profile: {count} steps x {comm.world_size} rank(s) x up to "
                f"{per_step // comm.world_size} spans a step = {count * per_step:,} trace "
                f"events; expected at most {MAX_EVENTS:,}; profile at most "
                f"{MAX_EVENTS // per_step} steps"
            )
        self.steps = range(max(start, run.step), min(start + count, run.schedule.total_steps))
        if not self.steps and comm.is_root:
            log.warning(
                "train.profile %s: the run does steps %d to %d; no trace is written",
                cfg.train.profile,
                run.step,
                run.schedule.total_steps - 1,
            )
        self.spans = []  # [row, name, start, end, step], this rank's perf_counter() seconds
        self.clocks = []  # rank 0: clock_offsets() at the window's start and end

    def laps(self, step):
        """The TracedLaps of `step` (in self.steps); the clocks are measured before the first."""
        if step == self.steps.start:
            self.clocks.append(clock_offsets(self.comm))
        return TracedLaps(self, step)

    def step_done(self, step, stop):
        """After the bookkeeping of `step`: at the window's end (or a stop), the trace."""
        if stop or step == self.steps[-1]:
            self.write(self.steps.start, step)
            self.steps = range(0)

    def write(self, first, last):
        """Every rank sends its spans to rank 0 (dist), which writes trace.json atomically."""
        comm = self.comm
        self.clocks.append(clock_offsets(comm))
        spans = comm.gather_object(self.spans, root=0)  # dist: at most MAX_EVENTS spans
        if comm.is_root:
            clocks = list(zip(*self.clocks, strict=True))  # per rank: (start, end) samples
            replace_text(self.path, trace_json(spans, clocks, steps=[first, last]))
            log.info("profile of steps %d to %d: %s", first, last, self.path)


class TracedLaps:
    """loop.Laps of a profiled step (the same `seconds` per phase) that keeps its spans.

    lap(phase, row) ends the span begun at the previous one, on the trace's row `row` (the
    phase's own by default); layer(phase, name) ends one layer's span inside `phase` (the
    network calls it: `trace` is what the loop passes as spans=); a lap right after layer
    spans only extends the last of them (the return and this call). end(stop) ends the
    bookkeeping span and the step's own span on the row "step".
    """

    def __init__(self, profile, step):
        self.seconds = dict.fromkeys(profile.phases, 0.0)
        self.trace, self.profile, self.step = self, profile, step
        self.inside = False  # the last span was a layer's
        self.start = self.last = time.perf_counter()

    def layer(self, phase, name):
        self._span(phase, phase, name)
        self.inside = True

    def lap(self, phase, row=None):
        if self.inside:
            now = time.perf_counter()
            self.seconds[phase] += now - self.last
            self.profile.spans[-1][3] = self.last = now
            self.inside = False
        else:
            self._span(phase, row or phase, row or phase)

    def end(self, stop):
        now = time.perf_counter()
        spans = self.profile.spans
        spans.append(["bookkeeping", "after_step", self.last, now, self.step])
        spans.append(["step", f"step {self.step}", self.start, now, self.step])
        self.profile.step_done(self.step, stop)

    def _span(self, phase, row, name):
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.profile.spans.append([row, name, self.last, now, self.step])
        self.last = now
