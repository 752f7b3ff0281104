"""The background-thread prefetcher: same results, errors reach the consumer, clean stops."""

import threading
import time

import pytest

from mpinet.data.prefetch import prefetched


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "mpinet-prefetch"]


def test_yields_what_a_plain_loop_yields():
    assert list(prefetched(lambda i: i * i, range(50))) == [i * i for i in range(50)]
    assert list(prefetched(lambda i: i, range(0))) == []
    assert not _prefetch_threads()


def test_an_exception_in_the_thread_reaches_the_consumer():
    def make(i):
        if i == 3:
            raise ZeroDivisionError("batch 3 is broken")
        return i

    got = []
    with pytest.raises(ZeroDivisionError, match="batch 3 is broken"):
        for item in prefetched(make, range(10)):
            got.append(item)
    assert got == [0, 1, 2]
    assert not _prefetch_threads()


def test_stopping_early_ends_the_thread():
    batches = prefetched(lambda i: i, range(10**9), depth=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.05)  # let the producer fill the queue and block on it
    batches.close()
    assert not _prefetch_threads()


def test_break_out_of_a_loop_ends_the_thread():
    def consume():
        for i in prefetched(lambda i: i, range(10**9)):
            if i == 5:
                break  # the generator is collected when consume() returns

    consume()
    assert not _prefetch_threads()


def test_the_next_items_are_prepared_while_the_consumer_works():
    started = []

    def make(i):
        started.append(i)
        return i

    batches = prefetched(make, range(10), depth=2)
    next(batches)
    deadline = time.monotonic() + 5
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started[:3] == [0, 1, 2]  # ahead of the consumer ...
    time.sleep(0.05)
    assert len(started) <= 4  # ... by at most the queue depth + the one being made
    batches.close()
