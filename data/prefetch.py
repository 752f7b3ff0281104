"""Prepare the next batch in a background thread while the current training step runs.

NumPy releases the GIL in its copies, casts and matrix products, so the thread's gathering
and scaling really overlap with the step. The queue holds at most `depth` finished batches.
Two duties make it safe to use inside a training loop:
- an exception in the thread is handed to the consumer and raised there, with its traceback;
- when the consumer stops early (break, an error, the generator is closed or collected), the
  thread is told to stop and joined: nothing is left running.
"""

import queue
import threading

_ITEM, _ERROR, _DONE = "item", "error", "done"


def prefetched(make, items, depth=2):
    """Yield make(item) for each item, computing up to `depth` results ahead in a thread."""
    results = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if not _put(results, (_ITEM, make(item)), stop):
                    return
        except Exception as e:  # handed to the consumer, which raises it
            _put(results, (_ERROR, e), stop)
            return
        _put(results, (_DONE, None), stop)

    thread = threading.Thread(target=produce, name="mpinet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == _DONE:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def _put(results, entry, stop):
    """Put entry in the queue unless the consumer has stopped; say whether it was put."""
    while not stop.is_set():
        try:
            results.put(entry, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
