"""Scribble2Label inside Lightning: EMA update epochs, exact resumption, GT-free training, the config end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from s2l_helpers import SAMPLE, fit, make_module, sample_datamodule

import cellseg.utils.io
from cellseg.methods.s2l.module import Scribble2Label
from cellseg.pipeline.checks import ConfigError, check_monitors, check_supervision
from cellseg.tasks.train import train


def snapshot(module: Scribble2Label) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.ema.maps.items()}


def test_ema_updates_exactly_after_epochs_4_9_14(tmp_path):
    module = make_module(warmup_epochs=100, ema_period=5)
    calls, changed_at, previous = [], [], {}
    original = module.run_ema_update

    def spy(epoch: int) -> None:
        calls.append((epoch, module.current_epoch, module.training))
        original(epoch)

    def record_changes(trainer, pl_module) -> None:
        nonlocal previous
        now = snapshot(pl_module)
        if previous and any(not torch.equal(now[k], previous[k]) for k in now):
            changed_at.append(trainer.current_epoch)
        previous = now

    module.run_ema_update = spy
    hook = pl.callbacks.LambdaCallback(on_train_epoch_start=record_changes)
    fit(module, sample_datamodule(tmp_path / "cache"), max_epochs=15, callbacks=[hook])
    assert [(e, cur) for e, cur, _ in calls] == [(4, 4), (9, 9), (14, 14)]
    assert changed_at == [5, 10]  # maps seen at the start of an epoch changed only after epochs 4 and 9
    assert module.ema.n_updates == 3 and module.training  # back in train mode after the eval-mode update
    assert all(float(m.float().max()) > 0 for m in module.ema.maps.values())


@pytest.mark.parametrize(("save_on_train_epoch_end", "ema_store"),
                         [(True, "checkpoint"), (False, "checkpoint"), (True, "sidecar")])
def test_stop_and_resume_reproduces_the_ema_maps_exactly(tmp_path, save_on_train_epoch_end, ema_store):
    """lr 0 fixes the weights, so the maps depend only on which updates ran; a lost or doubled one shows."""
    options = dict(lr_encoder=0.0, lr_decoder=0.0, warmup_epochs=1, ema_period=2, ema_dtype="float16",
                   ema_store=ema_store, ema_sidecar_dir=str(tmp_path / "ema_maps"))

    def checkpoints(name: str):
        return pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, save_last=True,
                                            save_on_train_epoch_end=save_on_train_epoch_end)

    cache = tmp_path / "cache"
    straight = make_module(**{**options, "ema_sidecar_dir": str(tmp_path / "ema_maps_straight")})
    fit(straight, sample_datamodule(cache, val_holdout=1), max_epochs=4, callbacks=[checkpoints("straight")])
    stopped = make_module(**options)
    fit(stopped, sample_datamodule(cache, val_holdout=1), max_epochs=2, callbacks=[checkpoints("stopped")])
    resumed = make_module(seed=3, **options)  # other initial weights: everything must come from the checkpoint
    fit(resumed, sample_datamodule(cache, val_holdout=1), max_epochs=4, callbacks=[checkpoints("resumed")],
        ckpt_path=str(tmp_path / "stopped" / "last.ckpt"))
    assert straight.ema.n_updates == resumed.ema.n_updates == 2
    for image_id in straight.ema.ids:
        assert torch.equal(straight.ema[image_id], resumed.ema[image_id]), image_id
    # saved at validation end, a checkpoint precedes its epoch's update (which a resume then runs)
    saved = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=True)["s2l_ema"]
    assert saved["n_updates"] == (2 if save_on_train_epoch_end else 1)
    assert ("maps" in saved) == (ema_store == "checkpoint")  # a sidecar reference holds no tensor


@pytest.mark.parametrize("prune", [True, False])
def test_sidecar_files_no_checkpoint_refers_to_are_pruned(tmp_path, prune):
    module = make_module(warmup_epochs=1, ema_period=1, ema_store="sidecar", ema_sidecar_dir=str(tmp_path / "ema_maps"),
                         ema_prune_sidecars=prune)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_epochs=1,
                                               save_on_train_epoch_end=True)  # keeps last.ckpt and the latest epoch
    fit(module, sample_datamodule(tmp_path / "cache"), max_epochs=4, callbacks=[checkpoints])
    referenced = {Path(torch.load(ck, weights_only=True)["s2l_ema"]["sidecar"]).name
                  for ck in (tmp_path / "ck").glob("*.ckpt")}
    on_disk = {p.name for p in (tmp_path / "ema_maps").glob("*.pt")}
    assert module.ema.n_updates == 4 and referenced == {"ema_update00004.pt"}
    assert on_disk == (referenced if prune else {f"ema_update{n:05d}.pt" for n in range(1, 5)})
    restored = make_module(ema_store="sidecar", ema_sidecar_dir=str(tmp_path / "ema_maps"))
    restored.on_load_checkpoint(torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True))
    assert all(torch.equal(restored.ema[i], module.ema[i]) for i in module.ema.ids)


def test_resume_on_other_training_images_is_refused(tmp_path):
    module = make_module(warmup_epochs=0, ema_period=1)
    fit(module, sample_datamodule(tmp_path / "cache"), max_epochs=1,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)])
    other = sample_datamodule(tmp_path / "cache", val_holdout=1)  # a different set of training ids
    with pytest.raises(ValueError, match="do not match the training images"):
        fit(make_module(warmup_epochs=0, ema_period=1), other, max_epochs=2,
            ckpt_path=str(tmp_path / "ck" / "last.ckpt"))


def test_training_never_reads_the_training_labels_after_scribble_generation(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    sample_datamodule(cache).prepare_data()  # scribbles are generated (and cached) from the GT first
    real_read_label = cellseg.utils.io.read_label

    def refuse_train_labels(path, *args, **kwargs):
        if Path(path).parent.name == "labels" and Path(path).parent.parent.name == "train":
            raise PermissionError(f"training label {path} must not be read after scribble generation")
        return real_read_label(path, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("cellseg") and getattr(module, "read_label", None) is real_read_label:
            monkeypatch.setattr(module, "read_label", refuse_train_labels)
    with pytest.raises(PermissionError):  # the guard works
        cellseg.utils.io.read_label(next((SAMPLE / "MoNuSegSample" / "train" / "labels").glob("*.png")))

    module = make_module(warmup_epochs=1, ema_period=1)
    datamodule = sample_datamodule(cache)
    trainer = fit(module, datamodule, max_epochs=2)  # warm-up, EMA updates, then the pseudo-label loss
    assert module.ema.n_updates == 2 and np.isfinite(trainer.callback_metrics["train/loss"].item())
    assert "train/loss_up" in trainer.callback_metrics
    predictions = trainer.predict(module, dataloaders=datamodule.predict_dataloader_for("test"))
    assert len([p for batch in predictions for p in batch]) == len(datamodule.ids("test")) == 2


def test_method_s2l_composes_on_dsb2018fluo_with_its_defaults(s2l_config):
    cfg = s2l_config("data=dsb2018fluo", "trainer.max_steps=-1", "trainer.max_epochs=3",
                     "trainer.val_check_interval=1.0", "trainer.check_val_every_n_epoch=1")
    check_supervision(cfg)
    check_monitors(cfg)
    assert cfg.supervision.kind == "scribble" and cfg.supervision.ratio == 0.3
    assert (cfg.model.encoder, cfg.model.decoder_attention_type, cfg.model.classes) == ("resnet50", "scse", 2)
    assert cfg.method.selection == "last" and cfg.method.module.ignore_index == cfg.supervision.ignore_index
    module = hydra.utils.instantiate(cfg.method.module, net=hydra.utils.instantiate(cfg.model))
    assert isinstance(module, Scribble2Label) and module.metric_prefix == "oracle"
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    assert isinstance(module.scheduler_factory(optimizer, total_steps=100),
                      torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert (trainer.max_epochs, trainer.max_steps) == (3, -1)


def test_s2l_with_full_supervision_is_refused_naming_both(s2l_config):
    with pytest.raises(ConfigError, match="method=s2l does not support supervision=full"):
        check_supervision(s2l_config("supervision=full"))


def test_faithful_config_freezes_the_head(s2l_config):
    cfg = s2l_config("method=s2l_faithful", "model=unet_small")
    module = hydra.utils.instantiate(cfg.method.module, net=hydra.utils.instantiate(cfg.model))
    assert module.faithful_frozen_head and [g["name"] for g in module.parameter_groups()] == ["encoder", "decoder"]


def test_smoke_run_end_to_end_writes_metrics(s2l_config):
    cfg = s2l_config("model=unet_small", "logger=csv", "data.val_holdout=1", "trainer.max_steps=-1",
                     "trainer.max_epochs=2", "trainer.val_check_interval=1.0", "trainer.check_val_every_n_epoch=1",
                     "method.module.warmup_epochs=1", "method.module.ema_period=1")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 3 and "aji" in summary["per_image_mean"]
    assert "test/aji" in metrics and "oracle/aji" in metrics and not any(k.startswith("val/") for k in metrics)
    assert "train/loss_up" in metrics  # the second epoch trained on pseudo labels
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["s2l_ema"]["n_updates"] == 2 and len(ckpt["s2l_ema"]["maps"]) == 3  # max_images after the hold-out
    assert all(m.dtype == torch.float16 for m in ckpt["s2l_ema"]["maps"].values())


def test_val_scribble_loss_selects_the_best_checkpoint_without_ground_truth(s2l_config, monkeypatch):
    cfg = s2l_config("model=unet_small", "logger=csv", "data.val_holdout=1", "trainer.max_steps=-1",
                     "trainer.max_epochs=3", "trainer.val_check_interval=1.0", "trainer.check_val_every_n_epoch=1",
                     "method.module.warmup_epochs=1", "method.module.ema_period=1", "method.module.val_scribble_loss=true",
                     "method.selection=best", "method.monitor=val/scribble_loss", "method.monitor_mode=min")
    check_monitors(cfg)  # a weak-label key is allowed; val/aji would not be
    losses: list[float] = []
    original = Scribble2Label.on_validation_epoch_end

    def record(self):
        if self.val_scribble.update_count:
            losses.append(float(self.val_scribble.compute()))
        original(self)

    monkeypatch.setattr(Scribble2Label, "on_validation_epoch_end", record)
    metrics = train(cfg)
    assert "val/scribble_loss" in metrics and "oracle/aji" in metrics and len(losses) == 3
    best = min(range(3), key=losses.__getitem__)
    # the run reports the score of the checkpoint it hands on, not of its last validation
    assert metrics["val/scribble_loss"] == pytest.approx(losses[best], rel=1e-5)
    out = Path(cfg.paths.output_dir)
    selected = [p for p in (out / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(selected) == 1
    assert torch.load(selected[0], weights_only=True)["epoch"] == best

    with pytest.raises(ConfigError, match="val/aji"):
        check_monitors(s2l_config("method.selection=best", "callbacks.model_checkpoint.monitor=val/aji"))
