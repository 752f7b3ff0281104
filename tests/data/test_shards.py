"""shard_range (training: equal, disjoint) and split_range (evaluation: covering all)."""

import pytest

from mpinet.data import shard_range, split_range

SIZES = [0, 1, 7, 100, 257, 60000]
WORLD_SIZES = [1, 2, 3, 4, 7, 8]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_shards_are_contiguous_disjoint_and_equal(n, world_size):
    ranges = [shard_range(n, rank, world_size) for rank in range(world_size)]
    assert {stop - start for start, stop in ranges} == {n // world_size}
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert stop == start  # contiguous and disjoint, in rank order
    assert ranges[0][0] == 0
    assert n - ranges[-1][1] == n % world_size  # only the remainder is dropped


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_splits_cover_every_sample_exactly_once(n, world_size):
    ranges = [split_range(n, rank, world_size) for rank in range(world_size)]
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(n))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("rank, world_size", [(2, 2), (-1, 2), (0, 0)])
def test_a_rank_outside_the_world_is_an_error(rank, world_size):
    with pytest.raises(ValueError, match="expected 0 <= rank < world_size"):
        shard_range(10, rank, world_size)
    with pytest.raises(ValueError, match="expected 0 <= rank < world_size"):
        split_range(10, rank, world_size)
