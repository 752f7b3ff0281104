"""The alpha-beta allreduce model of `mpinet scale`: each algorithm's cost, worked by hand."""

import pytest

from mpinet.cluster.alphabeta import LINKS, allreduce_seconds, parse_link

LINK = {"name": "test", "bits_per_second": 8e9, "latency_seconds": 1e-5}  # beta = 1 ns/byte
ALPHA, BETA, GAMMA = 1e-5, 1e-9, 1e10  # gamma: 1e10 bytes/s -> 0.1 ns per byte


def test_one_rank_sends_nothing():
    assert allreduce_seconds(1, 10**6, LINK, GAMMA) == (0.0, "none")


def test_two_ranks_exchange_half_the_vector_each_way():
    """Rabenseifner on 2: one halving step (m/2 sent, m/2 added), one doubling step (m/2)."""
    m = 10**6
    seconds, algorithm = allreduce_seconds(2, m, LINK, GAMMA)
    assert algorithm == "Rabenseifner"
    assert seconds == pytest.approx(2 * ALPHA + m * BETA + m / 2 / GAMMA, rel=1e-12)


def test_a_power_of_two_moves_2_p_minus_1_over_p_of_the_vector():
    m, p = 10**6, 16
    seconds, _ = allreduce_seconds(p, m, LINK, GAMMA)
    share = (p - 1) / p * m
    assert seconds == pytest.approx(2 * 4 * ALPHA + 2 * share * BETA + share / GAMMA, rel=1e-12)


def test_ranks_beyond_a_power_of_two_are_folded_in_and_out():
    m = 10**6
    six, _ = allreduce_seconds(6, m, LINK, GAMMA)
    four, _ = allreduce_seconds(4, m, LINK, GAMMA)
    assert six - four == pytest.approx(2 * (ALPHA + m * BETA) + m / GAMMA, rel=1e-9)


def test_short_messages_take_recursive_doubling():
    seconds, algorithm = allreduce_seconds(8, 8, LINK, GAMMA)
    assert algorithm == "recursive doubling"
    assert seconds == pytest.approx(3 * (ALPHA + 8 * BETA + 8 / GAMMA), rel=1e-12)
    _, algorithm = allreduce_seconds(8, 2049, LINK, GAMMA, values=4)  # fewer values than p
    assert algorithm == "recursive doubling"


def test_links_by_name_or_rate_and_latency():
    assert parse_link("1gbe") == {
        "name": "1gbe",
        "bits_per_second": LINKS["1gbe"][0],
        "latency_seconds": LINKS["1gbe"][1],
    }
    found = parse_link("25gbit,5us")
    assert found["bits_per_second"] == 25e9 and found["latency_seconds"] == pytest.approx(5e-6)
    found = parse_link("100Mbit, 2ms")
    assert found["bits_per_second"] == 100e6 and found["latency_seconds"] == pytest.approx(2e-3)


@pytest.mark.parametrize("text", ["10gb", "fast", "10gbit", "10gbit,5", "0gbit,1us", ""])
def test_a_link_it_cannot_read_is_one_error_naming_the_forms(text):
    with pytest.raises(
        ValueError, match="--link .*expected one of 10gbe, 1gbe, wan or RATE,LATENCY"
    ):
        parse_link(text)
