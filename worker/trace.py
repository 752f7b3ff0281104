"""Every rank's profiled spans -> one Chrome trace (the Trace Event Format's JSON object).

    {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}

One process per rank (pid = rank, named "rank r"), one thread per row (tid, named after
the row): "step" (the whole step), then the phases in the step's order. Spans are complete
("X") events, ts and dur in microseconds on rank 0's clock, from the first span of any rank.

The allreduce is split in two rows. "allreduce wait": from this rank's start of the
allreduce to the moment the LAST rank started it, time in which no MPI library can have
finished (it needs every rank's gradient): waiting for the slowest rank. "allreduce
transfer": the rest, from the last rank's start to this rank's return: the reduction, the
transfer and the division by the world size. The split is as exact as the clock alignment
(otherData.clock_error_us: half the quickest ping-pong, a few microseconds on one host);
the slowest rank shows no wait, a straggler a long wait on every other rank.
"""

import json

ROWS = (
    "step",
    "data",
    "forward",
    "backward",
    "allreduce wait",
    "allreduce transfer",
    "clip",
    "optimizer",
    "bookkeeping",
)
TIDS = {row: tid for tid, row in enumerate(ROWS, 1)}


def trace_json(spans, clocks, steps):
    """The trace's text: spans[rank] = [[row, name, start, end, step], ...] in that rank's
    perf_counter() seconds; clocks[rank] = its (offset, round_trip, t) samples at the start
    and end of the window (cluster/clock.py); steps: [first, last] profiled step."""
    aligned = split_allreduce([on_rank0_clock(own, *clocks[r]) for r, own in enumerate(spans)])
    starts = [span[2] for own in aligned for span in own]
    origin = min(starts) if starts else 0.0
    events = names(len(spans))
    for rank, own in enumerate(aligned):
        events += [event(*span, rank, origin) for span in own]
    other = {
        "generator": "mpinet train --profile",
        "steps": steps,
        "world_size": len(spans),
        "clock_offset_us": [[round(c[0] * 1e6, 3) for c in samples] for samples in clocks],
        "clock_error_us": [round(max(c[1] for c in samples) / 2 * 1e6, 3) for samples in clocks],
        "allreduce_wait": "this rank's start of the allreduce -> the last rank's start",
    }
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms", "otherData": other})


def split_allreduce(aligned):
    """Each rank's "allreduce" span -> "allreduce wait" until the last rank of the same step
    started its allreduce, then "allreduce transfer" (the module's docstring)."""
    last_in = {}  # step -> when the last rank started its allreduce
    for own in aligned:
        for row, _, start, _, step in own:
            if row == "allreduce":
                last_in[step] = max(start, last_in.get(step, start))
    split = []
    for own in aligned:
        spans = []
        for row, name, start, end, step in own:
            if row == "allreduce":
                joined = min(last_in[step], end)  # >= start: the latest start of the step
                spans.append(["allreduce wait", "wait", start, joined, step])
                spans.append(["allreduce transfer", "transfer", joined, end, step])
            else:
                spans.append([row, name, start, end, step])
        split.append(spans)
    return split


def on_rank0_clock(spans, first, last):
    """`spans` with times on rank 0's clock: t + offset, the offset drifting linearly from
    its value at the window's start (`first`) to its value at the end (`last`)."""
    (offset, _, at), (end_offset, _, end_at) = first, last
    drift = (end_offset - offset) / (end_at - at) if end_at > at else 0.0

    def moved(t):
        return t + offset + drift * (t - at)

    return [[row, name, moved(start), moved(end), step] for row, name, start, end, step in spans]


def event(row, name, start, end, step, rank, origin):
    """One complete event; ts and dur rounded to the nanosecond, so that a span ending where
    the next begins (ts + dur == next ts) never overlaps it."""
    ts = round((start - origin) * 1e6, 3)
    dur = round(round((end - origin) * 1e6, 3) - ts, 3)
    return {
        "name": name,
        "cat": row,
        "ph": "X",
        "ts": ts,
        "dur": dur,
        "pid": rank,
        "tid": TIDS[row],
        "args": {"step": step},
    }


def names(world_size):
    """The metadata events: each rank's process and each row's thread, named and ordered."""
    events = []
    for rank in range(world_size):
        events.append(meta("process_name", rank, 0, {"name": f"rank {rank}"}))
        events.append(meta("process_sort_index", rank, 0, {"sort_index": rank}))
        for row, tid in TIDS.items():
            events.append(meta("thread_name", rank, tid, {"name": row}))
            events.append(meta("thread_sort_index", rank, tid, {"sort_index": tid}))
    return events


def meta(name, pid, tid, args):
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}
