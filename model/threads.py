"""limit_threads(): cap the BLAS threads of this process, for scripts that use the network.

Why: on a loaded machine (other processes on the same cores) 2 BLAS threads ran a training
step 5-17x slower than 1, because each thread spins waiting for the other. `mpinet train`
pins every rank itself (worker/threads.py); a script or notebook that builds a network calls
limit_threads() instead, once, before the work.
"""

import os
from numbers import Integral

from threadpoolctl import threadpool_limits

ENV_THREADS = "MPINET_BLAS_THREADS"


def limit_threads(n=None, default=None):
    """Limit every BLAS pool of this process to `n` threads and return the number set.

    n=None reads $MPINET_BLAS_THREADS; when that is unset (or empty) `default` is used, and
    when that is None too, BLAS is left alone and None is returned. The limit lasts for the
    rest of the process.
    """
    if n is None:
        n = _from_environment() or default  # the variable's value is never 0
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(
            f"limit_threads: got n={n!r}; expected a whole number >= 1 "
            f"(or None to read ${ENV_THREADS}); pass e.g. limit_threads(1)"
        )
    threadpool_limits(limits=int(n), user_api="blas")
    return int(n)


def _from_environment():
    text = os.environ.get(ENV_THREADS, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{ENV_THREADS}: got {text!r}; expected a whole number >= 1; "
            f"set it to e.g. 1, or unset it to leave BLAS alone"
        )
    return int(text)
