"""LocalComm, auto() and the abort rules of local mode: no MPI needed."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from mpinet import cluster
from mpinet.cluster import LocalComm


def test_local_comm_is_rank_0_of_1():
    comm = cluster.local()
    assert (comm.rank, comm.world_size, comm.is_root) == (0, 1, True)
    assert (comm.local_rank, comm.local_size) == (0, 1)
    assert comm.timeout is None and comm.step is None
    assert comm.library == "no MPI"


@pytest.mark.parametrize(
    "version, name",
    [
        (
            "MPICH Version:      5.0.2\nMPICH Release date: Fri Sep 25 2026\n",
            "MPICH Version: 5.0.2",
        ),
        (
            "Open MPI v5.0.11, package: Open MPI user@host Distribution, ident: 5.0.11, repo rev: "
            "v5.0.11, Oct 2026\x00",
            "Open MPI v5.0.11",
        ),
        ("", "unknown MPI"),
    ],
)
def test_the_mpi_library_is_named_by_its_first_words(version, name):
    assert cluster.comm.mpi_library(version) == name


@pytest.mark.parametrize("method", ["allreduce_sum_", "allreduce_mean_", "broadcast_"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_collectives_leave_the_buffer_unchanged(rng, method, dtype):
    buf = rng.standard_normal((3, 4)).astype(dtype)
    before = buf.copy()
    assert getattr(LocalComm(), method)(buf) is None
    assert buf.dtype == dtype and np.array_equal(buf, before)


def test_allreduce_sum_accepts_integers_but_mean_needs_floats():
    counts = np.array([3, 4])
    LocalComm().allreduce_sum_(counts)
    assert counts.tolist() == [3, 4]
    with pytest.raises(TypeError, match="floating-point array, got int64"):
        LocalComm().allreduce_mean_(counts)


def test_object_collectives_return_copies():
    comm, obj = LocalComm(), {"loss": [0.5]}
    gathered = comm.allgather_object(obj)
    assert gathered == [obj] and gathered[0] is not obj
    assert comm.gather_object(obj) == [obj]
    assert comm.bcast_object(obj) == obj and comm.bcast_object(obj) is not obj


def test_object_collectives_fail_on_unpicklable_objects_as_under_mpi():
    with pytest.raises(AttributeError):  # a local function does not pickle
        LocalComm().allgather_object(lambda: 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.broadcast_(np.zeros(2), root=1),
        lambda c: c.gather_object(1, root=1),
        lambda c: c.bcast_object(1, root=2),
    ],
)
def test_a_root_other_than_0_does_not_exist(call):
    with pytest.raises(ValueError, match="only rank 0"):
        call(LocalComm())


def test_barrier_split_and_stats():
    comm = LocalComm()
    comm.barrier()
    sub = comm.split(color=3, key=1)
    assert isinstance(sub, LocalComm) and sub is not comm and sub.world_size == 1
    assert comm.stats.allreduce_bytes == 0 and comm.stats.wait_seconds == 0.0


def test_abort_exits_the_process_with_the_code():
    with pytest.raises(SystemExit) as exit_:
        LocalComm().abort(4)
    assert exit_.value.code == 4


@pytest.mark.parametrize(
    "variable", ["PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
)
def test_launched_by_mpi_sees_every_launcher(variable):
    assert cluster.launched_by_mpi({variable: "0"})
    assert not cluster.launched_by_mpi({"SLURM_PROCID": "0", "HOME": "/root"})


def test_auto_without_a_launcher_is_local_and_never_loads_mpi4py():
    env = {k: v for k, v in os.environ.items() if k not in cluster.launch.LAUNCHER_VARIABLES}
    code = (
        "import sys; from mpinet import cluster; comm = cluster.auto(); "
        "print(type(comm).__name__, 'mpi4py' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "LocalComm False\n", done.stderr


def test_the_stats_sum_per_name():
    stats = cluster.CommStats()
    stats.record("allreduce_mean_", 400, 0.25)
    stats.record("allreduce_sum_", 8, 0.5)
    stats.record("barrier", 0, 1.0)
    assert stats.allreduce_bytes == 408
    assert stats.wait_seconds == 1.75 and stats.last_seconds == 1.0
    assert {name: t.calls for name, t in stats.by_name.items()} == {
        "allreduce_mean_": 1,
        "allreduce_sum_": 1,
        "barrier": 1,
    }
    stats.record("barrier", 0, 0.5)
    assert stats.by_name["barrier"].calls == 2 and stats.by_name["barrier"].seconds == 1.5


# -- abort_on_error in local mode ------------------------------------------------------------


def test_an_all_ranks_error_is_one_line_and_exit_2(caplog):
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        with cluster.abort_on_error(LocalComm()):
            raise cluster.AllRanksError("config differs across ranks")
    assert exit_.value.code == cluster.EXIT_USER_ERROR == 2
    assert [r.getMessage() for r in caplog.records] == ["config differs across ranks"]
    assert caplog.records[0].exc_info is None and caplog.records[0].name == "mpinet.cluster.abort"


def test_a_user_error_is_one_line_and_exit_2(caplog):
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        with cluster.abort_on_error(LocalComm(), user_errors=(FileNotFoundError,)):
            raise FileNotFoundError("data/mnist.h5 not found")
    assert exit_.value.code == 2
    assert [r.getMessage() for r in caplog.records] == ["data/mnist.h5 not found"]


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("bug"), SystemExit(5)])
def test_other_exceptions_propagate_untouched_in_local_mode(error, caplog):
    with pytest.raises(type(error)) as raised:
        with cluster.abort_on_error(LocalComm(), user_errors=(OSError,)):
            raise error
    assert raised.value is error and caplog.records == []


def test_keyboard_interrupt_is_one_line_and_exit_130(caplog):
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        with cluster.abort_on_error(LocalComm()):
            raise KeyboardInterrupt
    assert exit_.value.code == cluster.EXIT_INTERRUPTED == 130
    assert [r.getMessage() for r in caplog.records] == [
        "interrupted: stopped at once, the last checkpoint is intact; run again with --resume auto"
    ]


def test_a_key_error_is_a_bug_by_default():
    """The one policy (cluster/errors.py): ValueError and OSError are the user's, not KeyError."""
    assert cluster.USER_ERRORS == (ValueError, OSError)
    with pytest.raises(KeyError):
        with cluster.abort_on_error(LocalComm()):
            raise KeyError("a bug")


def test_a_clean_block_returns_normally():
    with cluster.abort_on_error(LocalComm()):
        value = 42
    assert value == 42


def test_fail_together_in_local_mode():
    """Alone, the message is the error's own: no 'failed on rank 0' around it."""
    cluster.fail_together(LocalComm(), "opening the data", None)
    with pytest.raises(cluster.AllRanksError, match="^no such file$"):
        cluster.fail_together(LocalComm(), "opening the data", OSError("no such file"))


def test_on_root_returns_the_result_or_raises_the_error_alone():
    assert cluster.on_root(LocalComm(), "reading", lambda: {"a": 1}) == {"a": 1}
    assert cluster.on_root(LocalComm(), "reading", lambda: 5, share=False) == 5
    with pytest.raises(cluster.AllRanksError, match="^no such file$"):  # one line
        cluster.on_root(LocalComm(), "reading", _raise(OSError("no such\nfile")))
    with pytest.raises(KeyError):  # not a user error: a bug, raised as it is
        cluster.on_root(LocalComm(), "reading", _raise(KeyError("x")))
    with pytest.raises(cluster.AllRanksError, match="^'bad'$"):
        cluster.on_root(LocalComm(), "reading", _raise(KeyError("bad")), errors=(KeyError,))


def _raise(error):
    def fn():
        raise error

    return fn
