"""The stall watchdog: a collective that does not complete in time ends the job, loudly.

When a peer is gone or a link is cut, a blocking MPI collective hangs forever and nothing
inside MPI notices (measured on this kind of machine). Only a deadline kept by the
application works, so `Comm` starts every collective non-blocking (Iallreduce, Ibcast,
Ibarrier, ...) and `wait` polls it with Test() until it completes or the deadline passes.

At the deadline, `stall` tells every other rank where it is stuck (collective name, number
and step) with point-to-point messages, which need no cooperation from a hung collective,
listens a short grace period for the others' reports, logs one line and aborts the job.
Ranks that report the same collective had arrived; a rank in another collective is out of
step; a rank that says nothing never arrived (busy, stuck outside MPI, or dead).
"""

import logging
import os
import time

from .errors import EXIT_STALL, format_ranks

log = logging.getLogger(__name__)

# Polling runs in two phases, because 4 ranks on 2 cores starve each other if they spin:
YIELD_SECONDS = 0.02  # first Test() then sched_yield(), for this long: a peer sharing the
#                       core runs, and big transfers (which need both sides polling) go at speed
MAX_PAUSE_SECONDS = 0.001  # then sleeps doubling up to this: a long wait costs no CPU

REPORT_TAG = 31715  # point-to-point tag of the stall reports


def wait(comm, request, name, start):
    """Poll `request` until it completes; past `start + comm.timeout`, call `stall`."""
    deadline = start + comm.timeout
    pause = 25e-6
    while not request.Test():
        now = time.perf_counter()
        if now > deadline:
            stall(comm, name, now - start)
        if now - start < YIELD_SECONDS:
            os.sched_yield()
        else:
            pause = min(2 * pause, MAX_PAUSE_SECONDS)
            time.sleep(pause)


def stall(comm, name, waited):
    """Report the stall to every rank, gather their reports, log one line, abort the job."""
    mine = (comm.rank, comm.seq, name, comm.step)
    grace = grace_seconds(comm.timeout)
    _pending = _send_report(comm, mine)  # held, so the sends stay alive until the abort
    reports = _collect_reports(comm, mine, grace)
    if comm.rank != min(reports):
        time.sleep(grace)  # the lowest reporting rank logs and aborts; this is the fallback
    log.error("%s", stall_message(mine, reports, comm.world_size, comm.timeout, waited))
    comm.abort(EXIT_STALL)


def grace_seconds(timeout):
    """How long a stalled rank listens for the others' reports: a tenth of the timeout,
    at least 0.5 s (ranks reach their deadlines at slightly different times), at most 5 s."""
    return min(max(timeout / 10, 0.5), 5.0)


def stall_message(mine, reports, world_size, timeout, waited):
    """One line: which collective stalled where, and what every other rank was doing.

    `mine` and the values of `reports` (a dict keyed by rank) are (rank, seq, name, step).
    """
    rank, seq, name, step = mine
    where = f"{name} (collective #{seq}{_step_text(step)})"
    parts = [
        f"rank {rank}/{world_size}: {where} has not completed after {waited:.1f} s "
        f"(timeout {timeout:g} s)"
    ]
    arrived = [r for r, report in reports.items() if report[1:3] == (seq, name)]
    parts.append(f"waiting in it: {format_ranks(arrived)}")
    for r, (_, other_seq, other_name, other_step) in sorted(reports.items()):
        if r not in arrived:
            parts.append(
                f"rank {r} is in {other_name} (collective #{other_seq}{_step_text(other_step)})"
            )
    silent = sorted(set(range(world_size)) - set(reports))
    if silent:
        parts.append(
            f"no answer from {format_ranks(silent)} (busy outside collectives, stuck or dead)"
        )
    return (
        "; ".join(parts) + ". Aborting the job; if a step, evaluation or checkpoint "
        "can legitimately take this long, raise the collective timeout."
    )


def _step_text(step):
    return "" if step is None else f", step {step}"


def _send_report(comm, mine):
    """Start sending `mine` to every other rank; a dead peer (None) shows up as silent."""
    others = (r for r in range(comm.world_size) if r != comm.rank)
    return [comm.isend_object(mine, dest=r, tag=REPORT_TAG) for r in others]


def _collect_reports(comm, mine, grace):
    """The reports that arrive within `grace` seconds, keyed by rank (ours included)."""
    reports = {comm.rank: mine}
    end = time.perf_counter() + grace
    while len(reports) < comm.world_size and time.perf_counter() < end:
        report = comm.poll_object(REPORT_TAG)
        if report is not None:
            reports[report[0]] = report
        else:
            time.sleep(0.005)
    return reports
