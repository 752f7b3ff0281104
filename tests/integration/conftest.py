"""Fixtures of the integration tests: real jobs of the `mpinet` script."""

import pytest
from support import mpiexec


@pytest.fixture(scope="session")
def launcher():
    """mpiexec next to this Python (the mpich wheel) or on PATH; the test skips without."""
    found = mpiexec()
    if found is None:
        pytest.skip(
            "MPI TESTS SKIPPED: no mpiexec next to this Python or on PATH; "
            "install one with `pip install .[mpich]`"
        )
    return found
