"""TrainingSampler: deterministic, resumable, disjoint shards; InferenceSampler: each index once."""

import itertools

import pytest

from ovseg.data import InferenceSampler, TrainingSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_stream_is_a_sequence_of_permutations_and_deterministic():
    a = _take(TrainingSampler(10, seed=3), 30)
    assert a == _take(TrainingSampler(10, seed=3), 30)
    indices = [i for i, _ in a]
    for epoch in range(3):
        assert sorted(indices[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert indices[:10] != indices[10:20]  # a new permutation each epoch
    assert indices != [i for i, _ in _take(TrainingSampler(10, seed=4), 30)]
    assert len({s for _, s in a}) == 30  # one augmentation seed per stream position
    assert [i for i, _ in _take(TrainingSampler(4, shuffle=False), 6)] == [
        0,
        1,
        2,
        3,
        0,
        1,
    ]


def test_exact_resume_of_the_position():
    straight = _take(TrainingSampler(7, seed=1), 25)
    sampler = TrainingSampler(7, seed=1)
    first = _take(sampler, 9)
    sampler.position += 9  # what the loader does as it hands out samples
    state = sampler.state_dict()
    assert state["position"] == 9 and all(isinstance(v, (int, bool)) for v in state.values())
    resumed = TrainingSampler(7, seed=1)
    resumed.load_state_dict(state)
    assert first + _take(resumed, 16) == straight


def test_two_ranks_take_disjoint_shards_that_interleave_to_one_stream():
    single = _take(TrainingSampler(12, seed=0), 24)
    r0 = _take(TrainingSampler(12, seed=0, rank=0, world_size=2), 12)
    r1 = _take(TrainingSampler(12, seed=0, rank=1, world_size=2), 12)
    assert r0 == single[0::2] and r1 == single[1::2]
    epoch0 = {i for i, _ in r0[:6]}, {i for i, _ in r1[:6]}
    assert not epoch0[0] & epoch0[1] and epoch0[0] | epoch0[1] == set(range(12))
    # Resume of rank 1 at position 5.
    s = TrainingSampler(12, seed=0, rank=1, world_size=2)
    s.load_state_dict({"seed": 0, "size": 12, "shuffle": True, "world_size": 2, "position": 5})
    assert _take(s, 7) == r1[5:]


def test_resume_state_must_match():
    s = TrainingSampler(5, seed=0)
    with pytest.raises(ValueError, match="checkpoint has size=6"):
        s.load_state_dict({"seed": 0, "size": 6, "position": 1})
    with pytest.raises(ValueError, match="checkpoint has seed=1"):
        s.load_state_dict({"seed": 1, "size": 5, "position": 1})
    with pytest.raises(ValueError, match="empty"):
        TrainingSampler(0)


@pytest.mark.parametrize("size,world", [(10, 3), (2, 4), (7, 1)])
def test_inference_sampler_covers_each_index_once(size, world):
    shards = [list(InferenceSampler(size, r, world)) for r in range(world)]
    assert [i for shard in shards for i in shard] == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
