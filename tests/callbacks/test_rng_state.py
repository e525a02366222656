"""Random states travel with checkpoints and come back at the first training batch of a resumed fit."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import torch

from cellseg.callbacks.rng_state import (
    CHECKPOINT_KEY,
    RandomStateCheckpoint,
    collect_rng_states,
    restore_rng_states,
)


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_restored_states_repeat_the_same_draws_and_load_with_weights_only():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    draws()
    states = collect_rng_states()
    expected = draws()
    buffer = io.BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    restore_rng_states(torch.load(buffer, weights_only=True))
    assert draws() == expected


def test_callback_saves_and_restores_its_ranks_states_at_the_first_batch():
    callback, checkpoint = RandomStateCheckpoint(), {}
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    torch.manual_seed(3)
    callback.on_save_checkpoint(trainer, None, checkpoint)
    expected = torch.rand(2)
    assert len(checkpoint[CHECKPOINT_KEY]) == 1
    torch.rand(5)  # a resumed process draws other things while it is set up
    callback.on_load_checkpoint(trainer, None, checkpoint)
    callback.on_train_batch_start(trainer, None, None, 0)
    assert torch.equal(torch.rand(2), expected)
    state_after = torch.get_rng_state()
    callback.on_train_batch_start(trainer, None, None, 1)  # only once
    assert torch.equal(torch.get_rng_state(), state_after)
