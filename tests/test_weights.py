"""cellseg.weights: the one loading path for every model (docs/framework.md#weights-policy)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cellseg import weights
from cellseg.utils.hashing import sha256_file

torch.set_num_threads(1)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


def source_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Tiny().state_dict().items()}


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_none_keeps_random_init():
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = weights.load(model, None)
    assert report.source is None and not report.applied
    assert_loaded(model, before)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "nested"])
def test_pth_nested_round_trip(tmp_path, wrapper):
    state = source_state()
    obj = {"model": {"state_dict": state}} if wrapper == "nested" else {wrapper: state, "epoch": 3}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = Tiny()
    report = weights.load(model, path)
    assert_loaded(model, state)
    assert report.missing == [] and report.unexpected == []
    assert report.sha256 == sha256_file(path)


def test_safetensors_and_module_prefix(tmp_path):
    state = source_state(1)
    path = tmp_path / "ckpt.safetensors"
    save_file({f"module.{k}": v for k, v in state.items()}, str(path))
    model = Tiny()
    report = weights.load(model, str(path))
    assert_loaded(model, state)
    assert len(report.loaded) == len(state)


def test_prefix_map_and_missing_unexpected_logged(tmp_path, caplog):
    state = source_state(2)
    renamed = {k.replace("conv.", "backbone.stem.", 1): v for k, v in state.items() if not k.startswith("head.")}
    renamed["extra.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt.pt"
    torch.save(renamed, path)
    model = Tiny()
    head_before = model.head.weight.clone()
    with caplog.at_level(logging.WARNING, logger="cellseg.weights"):
        report = weights.load(model, path, prefix_map={"backbone.stem.": "conv."})
    assert torch.equal(model.conv.weight, state["conv.weight"])
    assert torch.equal(model.head.weight, head_before)  # missing -> untouched
    assert report.missing == ["head.bias", "head.weight"]
    assert report.unexpected == ["extra.weight"]
    assert "missing" in caplog.text and "unexpected" in caplog.text


def test_strict_refuses_missing(tmp_path):
    state = {k: v for k, v in source_state().items() if not k.startswith("head.")}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="head.weight"):
        weights.load(Tiny(), path, strict=True)


def test_shape_mismatch_names_file_and_key(tmp_path):
    state = source_state()
    state["head.weight"] = torch.zeros(3, 4)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong\.pth.*head\.weight"):
        weights.load(Tiny(), path)


def test_sha256_ok_and_mismatch(tmp_path):
    state = source_state()
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    digest = sha256_file(path)
    assert weights.load(Tiny(), path, sha256=digest.upper()).sha256 == digest
    wrong = "0" * 64
    with pytest.raises(ValueError) as info:
        weights.load(Tiny(), path, sha256=wrong)
    message = str(info.value)
    assert str(path) in message and wrong in message and digest in message


def test_missing_file_names_path_and_key(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as info:
        weights.load(Tiny(), path, config_key="model.weights")
    assert str(path) in str(info.value) and "model.weights" in str(info.value)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix"):
        weights.load(Tiny(), path)


def test_auto_refused_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLSEG_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="CELLSEG_OFFLINE=1"):
        weights.load(Tiny(), "auto", auto_source="resnet18", weights_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_drops_mae_extras_and_scope(tmp_path):
    """A checkpoint for a submodule with MAE-like extras loads into that submodule only."""
    outer = nn.Module()
    outer.encoder = Tiny()
    outer.decoder = nn.Linear(2, 2)  # a real `decoder` in the target must never be dropped
    state = source_state(3)
    extras = {"decoder_embed.weight": torch.ones(2), "mask_token": torch.ones(1, 1, 4)}
    path = tmp_path / "enc.pth"
    torch.save({"model": {**state, **extras}}, path)
    decoder_before = outer.decoder.weight.clone()
    report = weights.load(outer, path, scope="encoder")
    assert_loaded(outer.encoder, state)
    assert torch.equal(outer.decoder.weight, decoder_before)
    assert sorted(report.dropped) == ["decoder_embed.weight", "mask_token"]
    assert report.unexpected == []


def test_full_checkpoint_into_scope(tmp_path):
    outer = nn.Module()
    outer.encoder = Tiny()
    state = source_state(4)
    path = tmp_path / "full.pth"
    torch.save({f"encoder.{k}": v for k, v in state.items()} | {"head.weight": torch.zeros(1)}, path)
    report = weights.load(outer, path, scope="encoder")
    assert_loaded(outer.encoder, state)
    assert report.unexpected == []


class NotAllowed:
    pass


def test_mae_training_checkpoint_with_args(tmp_path):
    """MAE's own checkpoints pickle their argparse Namespace; weights_only loading still accepts them."""
    import argparse

    state = source_state(5)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-3), "epoch": 799}, path)
    model = Tiny()
    weights.load(model, path)
    assert_loaded(model, state)


def test_arbitrary_pickled_objects_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": source_state(), "extra": NotAllowed()}, path)
    with pytest.raises(ValueError, match=r"unsafe\.pth.*weights_only"):
        weights.load(Tiny(), path)
