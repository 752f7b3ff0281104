"""Fixtures shared by every test folder; plain helpers live in support.py."""

import logging
import os

import numpy as np
import pytest
from support import mpi_leftovers, remove_leftovers, shared_data_dir

from mpinet.data.prepare import prepare


@pytest.fixture(scope="session", autouse=True)
def no_mpi_leftovers():
    """The jobs the tests kill on purpose leave shared memory and temporary files behind:
    remove those of this session at its end (they had grown to 3.2 GB of /dev/shm here)."""
    before = mpi_leftovers()
    yield
    remove_leftovers(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data: the canonical MNIST and Fashion-MNIST .gz files."""
    found = shared_data_dir()
    if not (found / "mnist").is_dir():
        pytest.skip(
            f"the real MNIST files are missing: expected {found / 'mnist'} "
            f"(or set MPINET_SHARED_DATA)"
        )
    return found


@pytest.fixture(scope="session")
def mnist_h5(shared_data, tmp_path_factory):
    """The real MNIST prepared once per session (read-only for the tests)."""
    out = tmp_path_factory.mktemp("mnist") / "mnist.h5"
    return prepare("mnist", source=shared_data / "mnist", out=out)


def pytest_report_header(config):
    """Name the BLAS kernel in the header: tolerances must hold on every kernel."""
    from threadpoolctl import threadpool_info

    blas = [
        f"{i['internal_api']} {i.get('version')} kernel {i.get('architecture')}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    chosen = os.environ.get("OPENBLAS_CORETYPE", "unset")
    return f"BLAS: {', '.join(blas) or 'none found'} (OPENBLAS_CORETYPE={chosen})"


@pytest.fixture(autouse=True)
def keep_logging():
    """In-process commands (and the examples that run them) set up the `mpinet` logger with a
    handler on this test's captured stderr; put it back afterwards (every test, in every
    folder: a later test's server threads would log to a closed stream)."""
    logger = logging.getLogger("mpinet")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
