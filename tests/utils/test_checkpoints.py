"""read_checkpoint: one error naming the file for truncated, foreign or incomplete checkpoints."""

from __future__ import annotations

import pytest
import torch

from cellseg.callbacks.wandb_run_id import stored_run_id
from cellseg.utils.checkpoints import CheckpointError, read_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 3, "wandb_run_id": "abc"}, path)
    return path


def truncated_copy(path, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return broken


def test_a_good_checkpoint_is_read(checkpoint):
    assert read_checkpoint(checkpoint)["global_step"] == 3
    assert read_checkpoint(checkpoint, mmap=True, required=())["state_dict"]["w"][-1] == 999


@pytest.mark.parametrize("mmap", [False, True])
def test_a_truncated_checkpoint_names_the_file_and_what_was_expected(checkpoint, tmp_path, mmap):
    broken = truncated_copy(checkpoint, tmp_path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(broken, mmap=mmap)
    assert str(broken) in str(info.value) and "Lightning checkpoint" in str(info.value)
    assert "truncated" in str(info.value)


def test_missing_files_foreign_objects_and_missing_keys_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.ckpt"):
        read_checkpoint(tmp_path / "none.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt holds a list"):
        read_checkpoint(tmp_path / "list.ckpt")
    torch.save({"weights": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt lacks \['state_dict'\]"):
        read_checkpoint(tmp_path / "plain.pt")


def test_the_wandb_run_id_reader_uses_it(checkpoint, tmp_path):
    assert stored_run_id(checkpoint) == "abc"
    broken = truncated_copy(checkpoint, tmp_path)
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        stored_run_id(broken)
