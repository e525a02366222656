"""Scribble2Label's loss, targets, parameter groups, checkpoint hooks and options, on a tiny network."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from s2l_helpers import IGNORE, make_batch, make_module

from cellseg.methods.s2l.ema_maps import EmaMaps
from cellseg.models import build_segmentation_model


def maps_for(batch: dict, value: float | np.ndarray) -> EmaMaps:
    size = batch["target"].shape[-1]
    fill = np.broadcast_to(np.asarray(value, dtype=np.float32), (size, size))
    return EmaMaps({i: torch.from_numpy(fill.copy()) for i in batch["id"]}, dtype="float16")


def test_warm_up_loss_is_ce_over_scribbled_pixels_only():
    module, batch = make_module(warmup_epochs=3), make_batch()
    logits = module(batch["image"])
    scribbled = batch["target"] != IGNORE
    by_hand = F.cross_entropy(logits.permute(0, 2, 3, 1)[scribbled], batch["target"][scribbled])
    for value in (0.0, 1.0, 0.5):  # whatever the EMA maps say, warm-up ignores them
        module.ema = maps_for(batch, value)
        terms = module.compute_loss(logits, batch, epoch=2)
        assert torch.allclose(terms["loss"], by_hand) and "loss_up" not in terms
    # unscribbled pixels' logits do not enter the warm-up loss
    changed = logits.detach().clone()
    changed[~scribbled.unsqueeze(1).expand_as(changed)] = 7.0
    assert torch.allclose(module.compute_loss(changed, batch, epoch=2)["loss"], by_hand)


def test_after_warm_up_the_pseudo_term_uses_unscribbled_pixels_with_confident_ema():
    module, batch = make_module(warmup_epochs=3, tau=0.8, lam=0.5), make_batch()
    logits = module(batch["image"])
    size = batch["target"].shape[-1]
    ema = np.full((size, size), 0.5, dtype=np.float32)  # ignore band everywhere ...
    ema[6:8] = 0.9   # ... except confident foreground rows (unscribbled)
    ema[8:10] = 0.1  # and confident background rows (unscribbled)
    ema[2:4] = 0.05  # rows scribbled fg: the EMA must not overrule the scribble
    module.ema = maps_for(batch, ema)
    terms = module.compute_loss(logits, batch, epoch=3)
    pseudo = torch.full_like(batch["target"], IGNORE)
    pseudo[:, 6:8], pseudo[:, 8:10] = 1, 0
    loss_up = F.cross_entropy(logits, pseudo, ignore_index=IGNORE)
    loss_sp = F.cross_entropy(logits, batch["target"], ignore_index=IGNORE)
    assert torch.allclose(terms["loss_up"], loss_up) and torch.allclose(terms["loss_sp"], loss_sp)
    assert torch.allclose(terms["loss"], loss_sp + 0.5 * loss_up)
    n_unscribbled = int((batch["target"] == IGNORE).sum())
    assert float(terms["pseudo_fraction"]) == pytest.approx(int((pseudo != IGNORE).sum()) / n_unscribbled)


def test_pce_only_never_reads_ema_maps():
    module, batch = make_module(warmup_epochs=0, pce_only=True), make_batch()
    terms = module.compute_loss(module(batch["image"]), batch, epoch=50)  # module.ema is None: not needed
    assert set(terms) == {"loss", "loss_sp"}
    assert module.maybe_update_ema(4) is False


@pytest.mark.parametrize("epoch", [0, 5])
def test_no_nan_when_a_term_has_no_valid_pixel(epoch):
    module, batch = make_module(warmup_epochs=1), make_batch()
    batch["target"][:] = IGNORE  # no scribble at all
    module.ema = maps_for(batch, 0.5)  # and every EMA value in the ignore band
    logits = module(batch["image"])
    terms = module.compute_loss(logits, batch, epoch=epoch)
    assert torch.isfinite(terms["loss"]) and float(terms["loss"].detach()) == 0.0
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def one_optimiser_step(module) -> dict[str, torch.Tensor]:
    batch = make_batch()
    before = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
    optimizer = module.configure_optimizers()
    module.compute_loss(module(batch["image"]), batch, epoch=0)["loss"].backward()
    optimizer.step()
    return before


def test_head_is_trained_by_default():
    module = make_module()
    before = one_optimiser_step(module)
    after = module.net.state_dict()
    for name in ("segmentation_head.weight", "segmentation_head.bias", "encoder.weight", "decoder.1.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_faithful_frozen_head_leaves_the_head_unchanged():
    module = make_module(faithful_frozen_head=True)
    before = one_optimiser_step(module)
    after = module.net.state_dict()
    for name in ("segmentation_head.weight", "segmentation_head.bias"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["encoder.weight"], after["encoder.weight"])


def test_parameter_groups_of_the_smp_unet_cover_every_parameter_once():
    net = build_segmentation_model(arch="unet", encoder="resnet18", classes=2, decoder_attention_type="scse",
                                   decoder_channels=[32, 32, 32, 32, 32])
    module = make_module(lr_encoder=3e-4, lr_decoder=3e-3)
    module.net = net
    groups = {g["name"]: g for g in module.parameter_groups()}
    assert (groups["encoder"]["lr"], groups["decoder"]["lr"], groups["head"]["lr"]) == (3e-4, 3e-3, 3e-3)
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in net.segmentation_head.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == {id(p) for p in net.encoder.parameters()}
    frozen = make_module(faithful_frozen_head=True)
    assert [g["name"] for g in frozen.parameter_groups()] == ["encoder", "decoder"]


def test_optimiser_is_radam_with_decoupled_decay_and_per_group_lr():
    module = make_module(lr_encoder=1e-4, lr_decoder=2e-3)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.RAdam) and optimizer.defaults["decoupled_weight_decay"]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 2e-3, 2e-3]


def test_checkpoint_hooks_restore_the_maps_bit_exactly():
    module, batch = make_module(), make_batch()
    rng = np.random.default_rng(0)
    module.ema = EmaMaps({i: torch.from_numpy(rng.random((16, 16)).astype(np.float32)) for i in batch["id"]},
                         dtype="float16", last_update_epoch=4, n_updates=1)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    fresh = make_module(seed=1)
    assert fresh.ema is None
    fresh.on_load_checkpoint(torch.load(buffer, weights_only=True))
    assert fresh.ema.ids == module.ema.ids and fresh.ema.last_update_epoch == 4
    for image_id in module.ema.ids:
        assert fresh.ema[image_id].dtype == torch.float16
        assert torch.equal(fresh.ema[image_id], module.ema[image_id])


def test_sidecar_store_keeps_only_a_reference_in_the_checkpoint_and_checks_the_file(tmp_path):
    module, batch = make_module(ema_store="sidecar", ema_sidecar_dir=str(tmp_path / "run" / "ema_maps")), make_batch()
    rng = np.random.default_rng(0)
    module.ema = EmaMaps({i: torch.from_numpy(rng.random((16, 16)).astype(np.float32)) for i in batch["id"]},
                         dtype="float16", last_update_epoch=4, n_updates=1)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    reference = checkpoint["s2l_ema"]
    assert set(reference) == {"sidecar", "sha256", "n_updates"} and reference["n_updates"] == 1
    sidecar = Path(reference["sidecar"])
    assert sidecar.parent == tmp_path / "run" / "ema_maps" and sidecar.is_file()

    fresh = make_module(seed=1, ema_store="sidecar", ema_sidecar_dir=str(tmp_path / "elsewhere"))
    fresh.on_load_checkpoint(checkpoint)
    for image_id in module.ema.ids:
        assert torch.equal(fresh.ema[image_id], module.ema[image_id])

    moved = tmp_path / "moved" / "ema_maps"  # a run folder moved elsewhere: found by name in the new folder
    moved.parent.mkdir()
    sidecar.parent.rename(moved)
    relocated = make_module(ema_store="sidecar", ema_sidecar_dir=str(moved))
    relocated.on_load_checkpoint(checkpoint)
    assert relocated.ema.n_updates == 1
    with pytest.raises(FileNotFoundError, match=sidecar.name):
        make_module(ema_store="sidecar", ema_sidecar_dir=str(tmp_path / "empty")).on_load_checkpoint(checkpoint)
    data = bytearray((moved / sidecar.name).read_bytes())
    data[-30] ^= 0xFF
    (moved / sidecar.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        relocated.on_load_checkpoint(checkpoint)


def test_train_target_passes_scribbles_and_refuses_anything_else():
    module = make_module()
    scribble = np.array([[0, 1], [IGNORE, IGNORE]], dtype=np.uint8)
    np.testing.assert_array_equal(module.train_target(scribble, "scribble", (2, 2)), scribble)
    with pytest.raises(ValueError, match="supervision=scribble"):
        module.train_target(np.zeros((2, 2), np.int32), "instance", (2, 2))
    with pytest.raises(ValueError, match="values \\[7\\]"):
        module.train_target(np.array([[0, 7]], dtype=np.uint8), "scribble", (1, 2))


def test_instances_are_connected_components_of_p_fg_above_half_without_small_ones():
    module = make_module(min_instance_area=4)
    probs = np.zeros((2, 10, 10), dtype=np.float32)
    probs[1, 1:4, 1:4] = 0.9     # a 3 x 3 blob
    probs[1, 4, 4] = 0.9         # touches it diagonally: 8-connected, same instance
    probs[1, 7:9, 7:8] = 0.9     # 2 px: removed (< 4)
    probs[1, 0, 9] = 0.5         # not above 0.5
    probs[0] = 1 - probs[1]
    instances = module.probabilities_to_instances(probs)
    assert instances.max() == 1 and int((instances == 1).sum()) == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau": 0.3}, "method.module.tau"),
        ({"alpha": 0.0}, "method.module.alpha"),
        ({"ema_period": 0}, "method.module.ema_period"),
        ({"ema_store": "disk"}, "method.module.ema_store"),
        ({"ema_store": "sidecar"}, "ema_sidecar_dir"),
        ({"ema_dtype": "int8"}, "method.module.ema_dtype"),
        ({"instances": "magic"}, "method.module.instances"),
        ({"faithful_crop32": True}, "faithful_crop32"),
    ],
)
def test_bad_options_get_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        make_module(**options)


def test_an_update_runs_once_per_due_epoch_even_when_asked_twice():
    """The resume catch-up and on_train_epoch_end may both ask for the same epoch: only one update runs."""
    module, batch = make_module(ema_period=5), make_batch()
    module.ema = maps_for(batch, 0.0)
    ran = []
    module.run_ema_update = lambda epoch: (ran.append(epoch), module.ema.apply(module.ema.maps, epoch))
    asked = [3, 4, 4, 5, 9, 9, -1]
    answers = [module.maybe_update_ema(e) for e in asked]
    assert ran == [4, 9] and answers == [False, True, False, False, True, False, False]


def test_val_scribble_loss_is_the_cross_entropy_on_scribbled_pixels_only():
    module = make_module(val_scribble_loss=True)
    assert module.uses_val_targets and not make_module().uses_val_targets
    probs = np.zeros((2, 2, 3), dtype=np.float32)
    probs[1] = [[0.9, 0.2, 0.5], [0.7, 0.1, 0.4]]
    probs[0] = 1 - probs[1]
    target = torch.tensor([[1, 0, IGNORE], [1, IGNORE, 0]])
    module.validate_probabilities(probs, {"target": target[None]}, 0)
    expected = -np.mean(np.log([0.9, 0.8, 0.7, 0.6]))
    assert float(module.val_scribble.compute()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(RuntimeError, match="no scribble target"):
        module.validate_probabilities(probs, {}, 0)
