"""COIN self-distillation module: targets, loss with ignore 255, SGD groups + poly, EMA weights, A7 inference."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from cellseg.callbacks.ema_weights import RAW_STATE_KEY, EmaWeights
from cellseg.methods.coin.module import CoinSelfDistillation, downsample_nearest, edge_targets, seg_targets
from cellseg.methods.losses import foreground_dice_loss
from cellseg.methods.schedules import poly
from cellseg.models.deeplab_coin import CoinDeepLab
from cellseg.utils.ignore import IGNORE_CLASS as SEG_IGNORE
from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

torch.set_num_threads(1)


def make_module(edge_head: bool = True, inference: dict | None = None, **kwargs) -> CoinSelfDistillation:
    torch.manual_seed(0)
    net = CoinDeepLab(encoder="resnet18", output_stride=16, edge_head=edge_head)
    optimizer = partial(torch.optim.SGD, momentum=0.9, nesterov=True, weight_decay=4e-5)
    return CoinSelfDistillation(net, optimizer, partial(poly, power=0.9), lr=1e-2, rescale=None,
                                inference={"tile": 64, "overlap": 16, "batch_size": 2, **(inference or {})}, **kwargs)


def pseudo_batch(n: int = 2, size: int = 64) -> dict:
    labels = torch.zeros(n, size, size, dtype=torch.long)
    labels[:, 8:24, 8:24] = 1
    labels[:, 30:50, 30:44] = 2
    labels[:, 40:60, 0:12] = IGNORE
    return {"image": torch.randn(n, 3, size, size), "target": labels}


def test_targets_from_pseudo_labels():
    labels = torch.zeros(1, 8, 10, dtype=torch.long)
    labels[0, 1:5, 1:4] = 1
    labels[0, 1:5, 4:7] = 2          # touches instance 1
    labels[0, 6:8, 0:3] = IGNORE
    seg = seg_targets(labels)[0]
    assert (seg[labels[0] == IGNORE] == SEG_IGNORE).all() and (seg[1:5, 1:7] == 1).all() and seg[0, 0] == 0
    edge = edge_targets(labels)[0]
    expected = np.zeros((8, 10), dtype=np.int64)
    for cols in ((1, 4), (4, 7)):    # inner contour of each rectangle (including the shared line)
        block = np.zeros((8, 10), dtype=bool)
        block[1:5, cols[0]:cols[1]] = True
        inner = block.copy()
        inner[2:4, cols[0] + 1:cols[1] - 1] = False
        expected[inner] = 1
    expected[6:8, 0:3] = SEG_IGNORE
    assert np.array_equal(edge.numpy(), expected)
    small = downsample_nearest(labels, (2, 5))
    assert np.array_equal(small[0].numpy(), labels[0, ::4, ::2].numpy())


def test_loss_ignores_255_and_dice_is_per_sample():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 6, 6))
    target[0, :3] = SEG_IGNORE
    module = make_module(edge_head=False)
    dice = foreground_dice_loss(logits, target)
    prob, valid = logits.softmax(1)[:, 1].detach().numpy(), (target != SEG_IGNORE).numpy()
    truth = (target == 1).numpy() & valid
    per_sample = [1 - (2 * (prob[k] * truth[k]).sum() + 1) / ((prob[k] * valid[k]).sum() + truth[k].sum() + 1)
                  for k in range(2)]
    assert float(dice.detach()) == pytest.approx(np.mean(per_sample), rel=1e-5)
    ce = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    full = module.compute_loss({"seg": logits}, torch.where(target == SEG_IGNORE, IGNORE, target))
    assert float(full["seg_ce"].detach()) == pytest.approx(float(ce.detach()), rel=1e-6)
    full["loss"].backward()
    assert torch.all(logits.grad[0, :, :3] == 0) and logits.grad[1].abs().sum() > 0  # ignored pixels: no gradient


def test_ema_update_math_and_checkpoint_hooks():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EmaWeights(decay=0.75)
    ema.update(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(5)
    ema.update(model)
    assert torch.allclose(ema.ema["0.weight"], 0.75 * before["0.weight"] + 0.25 * model[0].weight)
    assert ema.ema["1.num_batches_tracked"] == 5  # integer buffers are copied, not averaged
    warm = EmaWeights(decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1) and EmaWeights(0.999).current_decay() == 0.999

    checkpoint = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    ema.on_save_checkpoint(None, model, checkpoint)
    assert torch.equal(checkpoint[RAW_STATE_KEY]["0.weight"], model[0].weight)
    assert torch.equal(checkpoint["state_dict"]["0.weight"], ema.ema["0.weight"])
    restored, fresh = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), EmaWeights(0.75)
    fresh.on_load_checkpoint(None, restored, checkpoint)
    assert torch.equal(restored[0].weight, model[0].weight) and torch.equal(fresh.ema["0.weight"], ema.ema["0.weight"])


def test_fit_uses_sgd_groups_poly_and_keeps_ema_weights(tmp_path):
    module = make_module(backbone_lr_mult=0.5)
    batches = [pseudo_batch() for _ in range(3)]
    ema = EmaWeights(decay=0.5)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ema, ModelCheckpoint(tmp_path, save_last=True)],
                         limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    optimizer = trainer.optimizers[0]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["heads"]["initial_lr"] == 1e-2 and groups["backbone"]["initial_lr"] == pytest.approx(5e-3)
    assert optimizer.defaults["nesterov"] and groups["heads"]["lr"] == 0.0  # poly: (1 - 3/3)^0.9 after 3 steps
    assert {k for k in trainer.callback_metrics if k.startswith("train/")} >= {
        "train/seg_ce", "train/seg_dice", "train/edge_ce", "train/edge_dice", "train/loss"}

    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    ema_state, raw_state = checkpoint["state_dict"], checkpoint[RAW_STATE_KEY]
    key = "net.seg_head.classifier.weight"
    assert not torch.allclose(ema_state[key], raw_state[key])  # the average lags the raw weights
    assert torch.equal(module.state_dict()[key], ema_state[key])  # after fit the module holds the EMA


def test_train_target_and_multiscale_inference():
    module = make_module(edge_head=False, inference={"scales": [1.0, 0.5], "hflip": True,
                                                      "crf": {"enabled": False}}, instances={"footprint_radius": 3})
    raw = np.array([[0, 3], [IGNORE, 1]], dtype=np.int32)
    assert np.array_equal(module.train_target(raw, "instance", (2, 2)), raw)
    with pytest.raises(ValueError, match="pseudo labels"):
        module.train_target(None, "none", (2, 2))
    module.eval()
    probs = module.predict_probabilities(torch.randn(3, 70, 90))
    assert probs.shape == (2, 70, 90) and np.allclose(probs.sum(0), 1.0, atol=1e-5)

    yy, xx = np.mgrid[:40, :60]
    blobs = ((yy - 12) ** 2 + (xx - 12) ** 2 < 49) | ((yy - 25) ** 2 + (xx - 45) ** 2 < 64)
    fake = np.stack([np.where(blobs, 0.2, 0.9), np.where(blobs, 0.8, 0.1)])
    instances = module.probabilities_to_instances(fake)
    assert instances.dtype == np.int32 and instances.max() == 2
    assert set(np.unique(instances[blobs])) == {1, 2} and (instances[~blobs] == 0).all()
