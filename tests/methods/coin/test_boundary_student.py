"""COIN's boundary-class student: three-class targets from pseudo labels, loss with ignore, decoding of touching
nuclei, refused settings, and two pipeline rounds through `experiment=coin_cpu_unet_monuseg`."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from coin_pipeline_synth import TINY, compose_coin, make_dataset

from cellseg.methods.coin.boundary_student import CoinBoundaryStudent, boundary_targets
from cellseg.methods.losses import CEDiceLoss
from cellseg.methods.schedules import poly
from cellseg.models import build_segmentation_model
from cellseg.pipeline.coin import CoinPipeline
from cellseg.postproc.instances import binary_to_instances
from cellseg.tasks.infer import load_inference_model
from cellseg.utils.ignore import IGNORE_CLASS
from cellseg.utils.ignore import IGNORE_INSTANCE as IGNORE

torch.set_num_threads(1)
UNET = dict(arch="unet", encoder="resnet18", classes=3, decoder_channels=[16, 8, 8, 8, 8])


def make_student(**kwargs) -> CoinBoundaryStudent:
    torch.manual_seed(0)
    options = {"rescale": None, "inference": {"tile": 64, "overlap": 16, "batch_size": 2}, **kwargs}
    return CoinBoundaryStudent(build_segmentation_model(**UNET), partial(torch.optim.AdamW, weight_decay=1e-4),
                               partial(poly, power=0.9), lr=1e-3, **options)


def test_targets_inside_boundary_background_and_ignore():
    labels = torch.zeros(1, 8, 10, dtype=torch.long)
    labels[0, 1:5, 1:4] = 1
    labels[0, 1:5, 4:7] = 2          # touches instance 1: the line between them is boundary on both sides
    labels[0, 6:8, 0:3] = IGNORE
    expected = np.zeros((8, 10), dtype=np.int64)
    expected[1:5, 1:7] = 2
    expected[2:4, 2] = 1             # the insides: what is left of each 4 x 3 block after its contour
    expected[2:4, 5] = 1
    expected[6:8, 0:3] = IGNORE_CLASS
    assert np.array_equal(boundary_targets(labels)[0].numpy(), expected)


def test_loss_is_ce_dice_over_three_classes_and_ignored_pixels_get_no_gradient():
    module = make_student()
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 2:8, 2:8], labels[:, 2:8, 8:14] = 1, 2
    labels[0, 10:, :] = IGNORE
    terms = module.compute_loss(logits, labels)
    expected = CEDiceLoss(IGNORE_CLASS)(logits, boundary_targets(labels))
    assert float(terms["loss"].detach()) == pytest.approx(float(expected["loss"].detach()), rel=1e-6)
    terms["loss"].backward()
    assert torch.all(logits.grad[0, :, 10:] == 0) and logits.grad[1, :, 10:].abs().sum() > 0
    with pytest.raises(ValueError, match="full-resolution"):
        module.compute_loss(logits[..., :8, :8], labels)


def test_decoding_separates_two_touching_nuclei():
    classes = np.zeros((20, 30), dtype=np.int64)
    classes[4:16, 3:14], classes[4:16, 14:27] = 2, 2      # two touching blocks, their contours boundary
    classes[5:15, 4:13], classes[5:15, 15:26] = 1, 1      # insides apart: the column 14 between them is boundary
    probs = (np.arange(3)[:, None, None] == classes[None]).astype(np.float32)
    instances = make_student(postproc={"min_area": 10}).probabilities_to_instances(probs)
    assert len(np.unique(instances[instances > 0])) == 2
    assert np.array_equal(instances > 0, classes > 0)
    assert len(np.unique(instances[4:16, 3:14])) == 1 and len(np.unique(instances[4:16, 15:27])) == 1


def test_distance_watershed_split_is_the_a4_watershed_of_inside_plus_boundary():
    yy, xx = np.mgrid[:40, :60]
    two_disks = ((yy - 20) ** 2 + (xx - 20) ** 2 < 13 ** 2) | ((yy - 20) ** 2 + (xx - 42) ** 2 < 13 ** 2)
    classes = np.where(two_disks, 1, 0)                   # touching disks, no boundary predicted between them
    probs = (np.arange(3)[:, None, None] == classes[None]).astype(np.float32)
    a4 = {"denoise": False, "dist_sigma": 1.0, "footprint_radius": 6, "connectivity": 4}
    merged = make_student(postproc={"min_area": 10}).probabilities_to_instances(probs)
    split = make_student(split="distance_watershed", instances=a4).probabilities_to_instances(probs)
    assert len(np.unique(merged[merged > 0])) == 1      # markers from one connected inside: one nucleus
    assert len(np.unique(split[split > 0])) == 2 and np.array_equal(split > 0, two_disks)
    np.testing.assert_array_equal(split, binary_to_instances(two_disks, **a4))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 2}, "predicts 3 classes"),
    ({"split": "components"}, "method.module.split='components'"),
    ({"edge_loss": True}, "edge head"),
    ({"postproc": {"fill_holes": False}}, "inference.fill_holes"),
    ({"inference": {"crf": {"enabled": True}}}, "crf.enabled=true is not supported"),
])
def test_settings_it_cannot_honour_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_student(**kwargs)


def test_two_rounds_of_the_experiment_train_predict_and_reload_from_the_checkpoint_alone(tmp_path):
    data_root = make_dataset(tmp_path / "data")
    tiny_training = [o for o in TINY if not o.startswith("model.")]
    cfg = compose_coin(tmp_path, "experiment=coin_cpu_unet_monuseg", "data=sample", f"data.root={data_root}",
                       "data.dataset=Synth", "method.cache=false", "method.train.max_steps=2",
                       "method.evaluate_every_round=false", *tiny_training, tiny=False)
    assert cfg.model.arch == "unet" and cfg.model.classes == 3 and cfg.method.module.optimizer._target_.endswith("AdamW")
    assert cfg.method.module.split == "distance_watershed"
    metrics = CoinPipeline(cfg).run()
    run = Path(cfg.paths.output_dir)
    assert "test/aji" in metrics  # round 1's student segmented the training images for P_1:
    assert sorted(p.name for p in (run / "predict_1").glob("*.png")) == ["train0.png", "train1.png"]
    checkpoint = run / "train_2" / "checkpoints" / "last.ckpt"
    lone = tmp_path / "lone" / "student.ckpt"
    lone.parent.mkdir()
    shutil.copy(checkpoint, lone)
    module, _ = load_inference_model(lone)
    assert isinstance(module, CoinBoundaryStudent)
    assert module.predict_instances(torch.rand(3, 64, 64)).shape == (64, 64)
