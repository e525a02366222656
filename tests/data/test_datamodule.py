"""NucleiDataModule: split selection, hold-out, modality subsets, crops and targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellseg.data import NucleiDataModule
from cellseg.data.weak import FullLabels, NoLabels


def sample_module(sample_data, **kwargs) -> NucleiDataModule:
    defaults = dict(name="sample", root=str(sample_data), dataset="MoNuSegSample", crop=64, crops_per_image=3, batch_size=4)
    return NucleiDataModule(**{**defaults, **kwargs})


def foreground_target(raw, kind, shape):
    assert kind == "instance" and raw.shape == shape
    return (raw > 0).astype(np.uint8)


def test_train_crops_come_with_their_targets(sample_data):
    dm = sample_module(sample_data, weak_labels=FullLabels())
    dm.configure_targets(foreground_target, ignore_index=255)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["target"].shape == (4, 64, 64)
    assert set(torch.unique(batch["target"]).tolist()) <= {0, 1}
    assert len(dm.train_dataloader().dataset) == 6 * 3


def test_crops_differ_between_sample_seeds_and_the_stream_repeats_under_the_same_seed(sample_data):
    dm = sample_module(sample_data, weak_labels=FullLabels(), augment=False)
    dm.configure_targets(foreground_target, ignore_index=255)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    assert not torch.equal(dataset[(0, 1)]["image"], dataset[(0, 2)]["image"])
    assert torch.equal(dataset[(0, 1)]["image"], dataset[(0, 1)]["image"])
    torch.manual_seed(0)  # the global RNG plays no part
    first = next(iter(dm.train_dataloader()))["image"]
    torch.manual_seed(1)
    assert torch.equal(first, next(iter(dm.train_dataloader()))["image"])


def test_small_images_are_padded_with_the_ignore_index(sample_data):
    dm = sample_module(sample_data, weak_labels=FullLabels(), crop=512, augment=False)
    dm.configure_targets(foreground_target, ignore_index=250)
    dm.setup("fit")
    target = dm.train_dataloader().dataset[0]["target"]
    assert target.shape == (512, 512)
    assert (target[384:, :] == 250).all() and (target[:, 384:] == 250).all()


def test_val_holdout_is_deterministic_and_disjoint(sample_data):
    dm = sample_module(sample_data, val_holdout=2)
    val, train = dm.ids("val"), dm.ids("train")
    assert len(val) == 2 and len(train) == 4 and not set(val) & set(train)
    assert sample_module(sample_data, val_holdout=2).ids("val") == val
    assert sample_module(sample_data, val_holdout=2, holdout_seed=1).ids("val") != val or len(train) < 3


def test_val_holdout_larger_than_train_is_refused(sample_data):
    with pytest.raises(ValueError, match="data.val_holdout=6"):
        sample_module(sample_data, val_holdout=6).ids("val")


def test_missing_dataset_folder_names_the_path(tmp_path):
    dm = NucleiDataModule(name="x", root=str(tmp_path), dataset="Nowhere")
    with pytest.raises(FileNotFoundError, match="Nowhere/train/images"):
        dm.ids("train")


def test_split_file_subsets(sample_data, tmp_path):
    ids = sample_module(sample_data).ids("train")
    split_file = tmp_path / "split.csv"
    pd.DataFrame({"id": ids, "split": ["train"] * 4 + ["val"] * 2}).to_csv(split_file, index=False)
    dm = sample_module(sample_data, train_split="train:train", val_split="train:val", split_file=str(split_file))
    assert dm.ids("train") == ids[:4] and dm.ids("val") == ids[4:]
    with pytest.raises(ValueError, match="needs data.split_file"):
        sample_module(sample_data, train_split="train:train").ids("train")


def test_dsb_modality_subset(shared_data):
    dm = NucleiDataModule(name="dsb", root=str(shared_data), dataset="DSB2018", train_split="stage1_train",
                          test_split="stage1_test", modality="fluorescence")
    assert len(dm.ids("train")) == 541 and len(dm.ids("test")) == 53
    with pytest.raises(ValueError, match="data.modality"):
        NucleiDataModule(name="dsb", root=str(shared_data), dataset="DSB2018", modality="xray")


def test_annotation_free_training_never_opens_labels(sample_data, tmp_path):
    """The regime's DataModule receives no label path: a pipeline must supply its own targets."""
    dm = sample_module(sample_data, weak_labels=NoLabels())
    dm.configure_targets(lambda raw, kind, shape: np.zeros(shape, np.uint8) if raw is None else 1 / 0, 255)
    dm.setup("fit")
    assert int(dm.train_dataloader().dataset[0]["target"].max()) == 0


def test_whole_image_dataset_returns_labels_of_matching_shape(sample_data):
    dataset = sample_module(sample_data).whole_image_dataset("test", with_labels=True)
    item = dataset[0]
    assert item["image"].shape[1:] == item["label"].shape == (384, 384)


def test_crop_geometry_reproduces_the_crop_of_any_per_image_map(sample_data):
    """Methods keep per-image maps (S2L's EMA): the returned geometry must cut them exactly like the target."""
    from cellseg.data.transforms import CropGeometry, apply_geometry

    dm = sample_module(sample_data, weak_labels=FullLabels(), crop=96)
    dm.configure_targets(lambda raw, kind, shape: (np.arange(raw.size).reshape(shape) % 250).astype(np.uint8), 255)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    torch.manual_seed(3)
    for index in range(6):
        item = dataset[index]
        geometry = CropGeometry.from_tensor(item["geometry"])
        full = dataset.targets[item["index"]]
        np.testing.assert_array_equal(apply_geometry(full, geometry, fill=255), item["target"].numpy())
    assert any(CropGeometry.from_tensor(dataset[i]["geometry"]).rot90 for i in range(12))


def test_data_instances_resolve_to_the_chosen_decoding_and_its_keywords():
    from cellseg.data.datamodule import check_instance_decoding

    chosen = {"method": "cc", "cc": {"connectivity": 8}, "watershed": {"footprint_radius": 6}}
    assert check_instance_decoding(chosen) == {"method": "cc", "kwargs": {"connectivity": 8}}
    assert check_instance_decoding({"method": "watershed"}) == {"method": "watershed", "kwargs": {}}
    with pytest.raises(ValueError, match="data.instances"):
        check_instance_decoding({"cc": {}})
    with pytest.raises(ValueError, match="data.instances.cc"):
        check_instance_decoding({"method": "cc", "cc": 8})
