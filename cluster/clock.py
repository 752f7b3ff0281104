"""How each rank's clock reads against rank 0's: what --profile needs to put every rank's
spans on one time axis (worker/profile.py, worker/trace.py)."""

import time

import numpy as np

CLOCK_TAG = 31716  # point-to-point tag of the ping-pong (the watchdog's is 31715)
CLOCK_ROUNDS = 8


def clock_offsets(comm, rounds=CLOCK_ROUNDS):
    """Each rank's time.perf_counter() against rank 0's, by ping-pong.

    Every rank must call this. Rank 0 exchanges `rounds` round trips with each other rank in
    turn and keeps the quickest (NTP's rule): the rank read its clock t while rank 0's read
    between `sent` and `back`, so rank 0's time = t + offset, offset = (sent + back) / 2 - t,
    wrong by at most half the round trip. Returns, on rank 0, [(offset, round_trip, t)]
    indexed by rank ((0.0, 0.0, now) for rank 0); None elsewhere. One process alone (a
    LocalComm too) has only its own clock. Point to point: not counted in `comm.seq`.
    """
    if not comm.is_root:
        stamp = np.zeros(1, np.float64)
        for _ in range(rounds):
            comm.recv_(stamp, 0, CLOCK_TAG)
            stamp[0] = time.perf_counter()
            comm.send(stamp, 0, CLOCK_TAG)
        return None
    found = [(0.0, 0.0, time.perf_counter())]
    for peer in range(1, comm.world_size):
        found.append(_quickest(comm, peer, rounds))
    return found


def _quickest(comm, peer, rounds):
    stamp, samples = np.zeros(1, np.float64), []
    for _ in range(rounds):
        sent = time.perf_counter()
        comm.send(stamp, peer, CLOCK_TAG)
        comm.recv_(stamp, peer, CLOCK_TAG)
        back = time.perf_counter()
        t = float(stamp[0])
        samples.append(((sent + back) / 2 - t, back - sent, t))
    return min(samples, key=lambda sample: sample[1])
