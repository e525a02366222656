"""The training data stream as a pure function of (seed, epoch, position), so resumed runs see the same batches.

`StreamSampler` yields `(index, sample_seed)` pairs: the order of an epoch comes from a generator seeded with
(seed, epoch), and every sample gets its own seed from (seed, epoch, position) for its random crop and
augmentation. Nothing depends on the global RNG, the number of data-loader workers or what ran before, so a
run resumed from a checkpoint at global step k (the data module starts the stream at batch k) trains on exactly
the batches an uninterrupted run would. It is a `DistributedSampler` subclass with an explicit rank and world
size, so Lightning keeps it under DDP (each rank takes every world-th sample of the padded order) instead of
wrapping it, and still calls `set_epoch` at every epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sized

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

from cellseg.utils.hashing import stable_seed

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the sample at `position` of epoch `epoch`'s order (positions count over all ranks)."""
    return stable_seed(seed, "sample", epoch, position)


def epoch_order(n_items: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(n_items) that depends only on (seed, epoch)."""
    return np.random.default_rng(stable_seed(seed, "order", epoch)).permutation(n_items)


class StreamSampler(DistributedSampler):
    """Shuffled `(index, sample_seed)` pairs of one rank for the current epoch, optionally starting mid-epoch.

    `start_at(epoch, skip)` makes the next iteration yield epoch `epoch` from its `skip`-th sample of this rank on
    (used once, when resuming); later epochs come whole, as `set_epoch` selects them.
    """

    def __init__(self, dataset: Sized, seed: int, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False) -> None:
        if len(dataset) < 1:
            raise ValueError("StreamSampler needs a non-empty dataset")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed),
                         drop_last=drop_last)
        self._skip = 0

    def start_at(self, epoch: int, skip: int) -> None:
        if epoch < 0 or not 0 <= skip <= self.num_samples:
            raise ValueError(f"cannot start the data stream at epoch {epoch}, sample {skip} of {self.num_samples}")
        self.epoch, self._skip = int(epoch), int(skip)

    def rank_positions(self) -> list[int]:
        """Positions (in the padded epoch order) this rank reads, in order."""
        total = self.total_size
        return list(range(self.rank, total, self.num_replicas))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(len(self.dataset), self.seed, self.epoch)
        padded = np.resize(order, self.total_size) if not self.drop_last else order[: self.total_size]
        positions = self.rank_positions()[self._skip:]
        self._skip = 0
        for position in positions:
            yield int(padded[position]), sample_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return self.num_samples


def batches_per_epoch(n_samples: int, batch_size: int, drop_last: bool) -> int:
    return n_samples // batch_size if drop_last else math.ceil(n_samples / batch_size)


def limited_batches(n_batches: int, limit: int | float) -> int:
    """What Lightning's `limit_train_batches` leaves of an epoch of `n_batches` (an int caps, a float scales)."""
    if isinstance(limit, float):
        return n_batches if limit >= 1.0 else int(n_batches * limit)
    return min(n_batches, int(limit))


def stream_position(batches_done: int, epoch_batches: int) -> tuple[int, int]:
    """(epoch, batches already taken in it) after `batches_done` batches of `epoch_batches` each."""
    if epoch_batches < 1:
        raise ValueError(f"an epoch of {epoch_batches} batches cannot be resumed")
    return divmod(int(batches_done), int(epoch_batches))


class StreamDataLoader(DataLoader):
    """A DataLoader over a `StreamSampler` whose checkpointed state names the stream it reads.

    The position needs no saving (it is the trainer's global step); the state lets a resumed run notice that it
    reads another stream (seed, batch size, world size or dataset size changed), which would break exactness.
    """

    def stream_identity(self) -> dict:
        sampler = self.sampler
        return {"seed": int(sampler.seed), "batch_size": int(self.batch_size), "world_size": int(sampler.num_replicas),
                "dataset_size": len(sampler.dataset)}

    def state_dict(self) -> dict:
        return self.stream_identity()

    def load_state_dict(self, state: dict) -> None:
        current = self.stream_identity()
        changed = {k: (state.get(k), v) for k, v in current.items() if state.get(k) != v}
        if changed:
            log.warning("resuming on another data stream (checkpoint vs now: %s): the run will not repeat the "
                        "uninterrupted one", changed)
