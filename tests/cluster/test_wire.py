"""The gradient's wire (cluster/wire.py): the 16-bit mean equals NumPy's, bit for bit, on every
rank and every world size; the float32 wire is today's allreduce_mean_, untouched."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from support import job_environment, openmpi_flags, openmpi_or_skip, run_job

from mpinet.cluster import LocalComm
from mpinet.cluster.wire import WIRE_DTYPES, Wire


@pytest.mark.mpi
@pytest.mark.numerics
@pytest.mark.parametrize("ranks", [2, 3])
def test_16_bit_mean_is_numpys_bit_for_bit_and_identical_on_every_rank(mpirun, ranks):
    """3 ranks: 1001 values are padded to 1002, 2 values to 3 (rank 2 owns only padding)."""
    job = mpirun(ranks, "wire.py")
    assert job.returncode == 0, job.output
    for rank in range(ranks):
        assert f"rank {rank}/{ranks}: wire ok" in job.stdout


@pytest.mark.mpi
def test_open_mpi_gives_the_same_bits():
    """The bits come from wire.py, not from the MPI library's reduction tree."""
    ompi = openmpi_or_skip()
    script = Path(__file__).parent / "scripts" / "wire.py"
    command = [str(ompi / "mpirun"), *openmpi_flags(), "-n", "3", str(ompi / "python"), str(script)]
    job = run_job(command, timeout=60, env=job_environment())
    assert job.returncode == 0, job.output
    assert all(f"rank {rank}/3: wire ok" in job.stdout for rank in range(3))


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_rank_rounds_each_value_to_16_bits_once(rng, name, dtype):
    """The mean over one rank is the gradient itself, rounded as -n 2 rounds it."""
    grad = (rng.standard_normal(1001) * 10.0 ** rng.integers(-7, 3, 1001)).astype(dtype)
    expected = grad.astype(WIRE_DTYPES[name]).astype(dtype)
    Wire(LocalComm(), name).allreduce_mean_(grad)
    assert grad.dtype == dtype and np.array_equal(grad, expected)


def test_bfloat16_rounds_to_nearest_ties_to_even():
    # bfloat16 keeps 8 significant bits: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
    grad = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8)], np.float32)
    Wire(LocalComm(), "bfloat16").allreduce_mean_(grad)
    assert grad.tolist() == [1.0, 1 + 2**-6, 1 + 2**-7, -1.0]


class Spy(LocalComm):
    """A LocalComm that records the arrays its collectives receive."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def allreduce_mean_(self, buf):
        self.calls.append(("allreduce_mean_", buf))

    def alltoall_(self, send, recv):
        self.calls.append(("alltoall_", send))
        super().alltoall_(send, recv)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_float32_wire_is_todays_allreduce_of_the_buffer_itself(dtype):
    comm, grad = Spy(), np.arange(5, dtype=dtype)
    Wire(comm, "float32").allreduce_mean_(grad)
    assert len(comm.calls) == 1 and comm.calls[0][0] == "allreduce_mean_"
    assert comm.calls[0][1] is grad  # no copy, no cast: a float64 model sends float64
    assert grad.tolist() == [0, 1, 2, 3, 4]


def test_16_bit_wire_sends_16_bit_words_and_keeps_its_buffers():
    comm = Spy()
    wire = Wire(comm, "bfloat16")
    for _ in range(2):
        wire.allreduce_mean_(np.ones(7, np.float32))
    (_, first), (_, second) = comm.calls
    assert first.dtype == np.uint16 and first.size == 7 and first is second


def test_a_16_bit_wire_refuses_an_integer_array():
    with pytest.raises(TypeError, match="allreduce_mean_ needs a floating-point array"):
        Wire(LocalComm(), "float16").allreduce_mean_(np.ones(3, np.int64))


def test_an_unknown_wire_dtype_is_one_line_naming_the_choices():
    with pytest.raises(ValueError) as error:
        Wire(LocalComm(), "int8")
    assert str(error.value) == (
        "allreduce dtype: got 'int8'; expected one of 'float32', 'bfloat16', 'float16'"
    )


def test_wire_dtypes_are_the_16_bit_types_they_name():
    assert WIRE_DTYPES["bfloat16"] == ml_dtypes.bfloat16
    assert np.dtype(WIRE_DTYPES["float16"]).itemsize == 2


def test_local_comm_has_the_wire_collectives_of_one_rank():
    comm, send, recv = LocalComm(), np.arange(4, dtype=np.uint16), np.zeros(4, np.uint16)
    comm.alltoall_(send, recv)  # the one block goes to this rank itself
    comm.allgather_(recv)  # and comes back from it
    assert recv.tolist() == [0, 1, 2, 3] and comm.stats.by_name == {}
