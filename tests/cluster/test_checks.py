"""The cross-rank checks' messages, with a fake communicator that plays any rank."""

import numpy as np
import pytest

from mpinet import cluster
from mpinet.cluster.checks import digest, mismatch_message
from mpinet.cluster.errors import format_ranks
from mpinet.cluster.watchdog import grace_seconds, stall_message


class ReplayComm:
    """Rank `rank` of a job whose allgather returns what every rank's `values[r]` gives."""

    def __init__(self, rank, values, check):
        self.rank, self.world_size, self.is_root = rank, len(values), rank == 0
        self._values, self._check = values, check

    def allgather_object(self, obj):
        gathered = []
        for value in self._values:
            spy = _Spy()
            try:
                self._check(spy, value)  # what rank r would contribute
            except cluster.AllRanksError:  # a job of one rank that fails: fine, a spy
                pass
            gathered.append(spy.contributed)
        assert gathered[self.rank] == obj
        return gathered


class _Spy:
    contributed = None

    def allgather_object(self, obj):
        self.contributed = obj
        return [obj]


def raised_on_every_rank(check, values):
    """The messages every rank of the fake job raises."""
    messages = []
    for rank in range(len(values)):
        with pytest.raises(cluster.AllRanksError) as error:
            check(ReplayComm(rank, values, check), values[rank])
        messages.append(str(error.value))
    return messages


LAYOUT = (("W1", (784, 100), "float32"), ("b1", (100,), "float32"))


def test_equal_values_pass_on_every_rank():
    for check, value in [
        (cluster.assert_same_layout, LAYOUT),
        (cluster.assert_same_config, "[optim]\nlr = 0.1\n"),
        (cluster.assert_same_data, "mnist sha256=ab12"),
        (cluster.assert_same_params, np.arange(5, dtype=np.float32)),
    ]:
        for rank in range(3):
            check(ReplayComm(rank, [value] * 3, check), value)


def test_a_layout_mismatch_names_the_ranks_and_the_sizes():
    odd = LAYOUT + (("W2", (100, 10), "float32"),)
    messages = raised_on_every_rank(cluster.assert_same_layout, [LAYOUT, LAYOUT, odd, LAYOUT])
    assert len(set(messages)) == 1
    assert messages[0] == (
        "parameter layout differs across ranks: ranks 0-1, 3 have 2 tensors / 78500 values, "
        "rank 2 has 3 tensors / 79500 values; every rank must build the same network from "
        "the same model spec"
    )


def test_a_layout_that_differs_in_names_only_shows_the_digests():
    renamed = (("conv1.W", (784, 100), "float32"), ("b1", (100,), "float32"))
    message = raised_on_every_rank(cluster.assert_same_layout, [LAYOUT, renamed])[0]
    assert f"rank 0 has 2 tensors / 78500 values (sha256 {digest(LAYOUT)[:12]})" in message
    assert f"rank 1 has 2 tensors / 78500 values (sha256 {digest(renamed)[:12]})" in message


def test_diverged_parameters_name_the_diverging_rank():
    params = [np.ones(10, np.float32) for _ in range(4)]
    params[3][7] = np.nextafter(np.float32(1), np.float32(2))  # one ulp apart
    messages = raised_on_every_rank(cluster.assert_same_params, params)
    assert len(set(messages)) == 1
    assert messages[0].startswith(
        f"parameter checksum differs across ranks: ranks 0-2 have sha256 "
        f"{digest(params[0])[:12]}, rank 3 has sha256 {digest(params[3])[:12]}; "
        "the replicas diverged"
    )


def test_config_and_data_mismatches():
    config = raised_on_every_rank(cluster.assert_same_config, ["lr = 0.1\n", "lr = 0.2\n"])[0]
    assert config.startswith("resolved config differs across ranks: rank 0 has sha256 ")
    assert config.endswith("every rank must read the same config file with the same --set flags")
    data = raised_on_every_rank(cluster.assert_same_data, ["mnist ab12", "mnist cd34"])[0]
    assert data.startswith(
        "data file differs across ranks: rank 0 has 'mnist ab12', rank 1 has 'mnist cd34'"
    )


def test_fail_together_groups_the_ranks_by_message():
    errors = [None, OSError("no such file"), None, OSError("no such file"), ValueError("bad")]
    messages = raised_on_every_rank(
        lambda comm, error: cluster.fail_together(comm, "opening the data", error), errors
    )
    assert set(messages) == {"opening the data failed on ranks 1, 3: no such file; rank 4: bad"}


def test_mismatch_message_without_hint():
    assert (
        mismatch_message("x", [("a", "A"), ("b", "B")])
        == "x differs across ranks: rank 0 has A, rank 1 has B"
    )


@pytest.mark.parametrize(
    "ranks, text",
    [
        ([3], "rank 3"),
        ([0, 1], "ranks 0-1"),
        ([5, 0, 1, 2], "ranks 0-2, 5"),
        ([0, 2, 4], "ranks 0, 2, 4"),
    ],
)
def test_format_ranks(ranks, text):
    assert format_ranks(ranks) == text


def test_digest_sees_dtype_shape_and_every_bit():
    a = np.arange(6, dtype=np.float32)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.astype(np.float64))
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest(a[::2]) == digest(np.ascontiguousarray(a[::2]))
    assert digest(b"abc") == digest("abc") != digest(("abc",))


def test_stall_message_names_who_waits_where():
    mine = (0, 41, "allreduce_mean_", 120)
    reports = {0: mine, 2: (2, 41, "allreduce_mean_", 120), 3: (3, 42, "barrier", None)}
    message = stall_message(mine, reports, world_size=5, timeout=300.0, waited=300.4)
    assert message.startswith(
        "rank 0/5: allreduce_mean_ (collective #41, step 120) has not completed after "
        "300.4 s (timeout 300 s); waiting in it: ranks 0, 2; rank 3 is in barrier "
        "(collective #42); no answer from ranks 1, 4 (busy outside collectives, stuck or "
        "dead). Aborting the job;"
    )


@pytest.mark.parametrize("timeout, grace", [(2.0, 0.5), (30.0, 3.0), (300.0, 5.0)])
def test_grace_seconds(timeout, grace):
    assert grace_seconds(timeout) == grace
