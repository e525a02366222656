"""The training stream is a function of (seed, epoch, position): orders, skips, rank shards, worker independence."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cellseg.data.datasets import TrainCropDataset
from cellseg.data.sampling import StreamDataLoader, StreamSampler, limited_batches, stream_position


def items(sampler: StreamSampler) -> list[tuple[int, int]]:
    return list(iter(sampler))


def test_an_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    data = list(range(10))
    first, again, other_seed = StreamSampler(data, seed=3), StreamSampler(data, seed=3), StreamSampler(data, seed=4)
    assert items(first) == items(again) and items(first) != items(other_seed)
    assert sorted(i for i, _ in items(first)) == data
    epoch0 = items(first)
    first.set_epoch(1)
    assert items(first) != epoch0 and sorted(i for i, _ in items(first)) == data
    assert len({seed for _, seed in epoch0}) == 10  # one seed per sample


def test_starting_mid_epoch_yields_the_tail_of_that_epoch_once():
    data = list(range(9))
    sampler = StreamSampler(data, seed=0)
    sampler.set_epoch(2)
    whole = items(sampler)
    sampler.start_at(2, 4)
    assert items(sampler) == whole[4:]
    assert items(sampler) == whole  # the skip applies to one iteration only
    with pytest.raises(ValueError, match="cannot start"):
        sampler.start_at(0, 10)


def test_ranks_read_disjoint_padded_shards_of_the_same_order():
    data = list(range(7))
    shards = [items(StreamSampler(data, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert {i for shard in shards for i, _ in shard} == set(data)
    seeds = [seed for shard in shards for _, seed in shard]
    assert len(set(seeds)) == 9  # positions differ across ranks, padding included


def test_stream_position_and_epoch_limits():
    assert stream_position(7, 3) == (2, 1) and stream_position(6, 3) == (2, 0)
    assert limited_batches(10, 1.0) == 10 and limited_batches(10, 0.5) == 5 and limited_batches(10, 4) == 4


def crop_dataset() -> TrainCropDataset:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    targets = [rng.integers(0, 2, (40, 48), dtype=np.uint8) for _ in range(3)]
    return TrainCropDataset(["a", "b", "c"], images, targets, crop=16, crops_per_image=2, ignore_index=255,
                            augment=None)


def test_samples_depend_on_their_seed_only_whatever_the_workers():
    dataset = crop_dataset()
    assert torch.equal(dataset[(1, 77)]["image"], dataset[(1, 77)]["image"])
    assert not torch.equal(dataset[(1, 77)]["image"], dataset[(1, 78)]["image"])

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = StreamSampler(dataset, seed=5)
        loader = StreamDataLoader(dataset, batch_size=2, sampler=sampler, num_workers=workers,
                                  generator=torch.Generator().manual_seed(5))
        return [batch["image"] for batch in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a, b)


def test_loader_state_names_its_stream_and_warns_when_a_resume_reads_another(caplog):
    dataset = crop_dataset()
    loader = StreamDataLoader(dataset, batch_size=2, sampler=StreamSampler(dataset, seed=5))
    state = loader.state_dict()
    assert state == {"seed": 5, "batch_size": 2, "world_size": 1, "dataset_size": 6}
    other = StreamDataLoader(dataset, batch_size=3, sampler=StreamSampler(dataset, seed=5))
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(state)
    assert "another data stream" in caplog.text and "batch_size" in caplog.text
