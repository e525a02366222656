"""InstanceSegMetrics: states, merging, duplicate dropping, and a two-process gloo run."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from label_perturbations import perturbed_cases

from cellseg.metrics import (
    CLEAN_METRICS,
    InstanceSegMetrics,
    SemanticSegMetrics,
    aggregate,
    image_stats,
)

torch.set_num_threads(1)
NAMES = (*CLEAN_METRICS, "s2l_mdice_faithful", "s2l_iou_faithful")


@pytest.fixture(scope="module")
def images(monuseg_crops):
    """Six (id, gt, pred) 128 x 128 images, one with an empty GT and prediction."""
    out = []
    for k, crop in enumerate(monuseg_crops):
        for case in (8, 3):  # combo, merged
            _, gt, pred = perturbed_cases(crop[:128, :128], seed=30 + k)[case]
            out.append((f"img{k}-{case}", gt.astype(np.int32), pred.astype(np.int32)))
    empty = np.zeros((128, 128), np.int32)
    out[-1] = ("empty", empty, empty)
    return out


def expected_summary(items, names=NAMES) -> dict[str, float]:
    summary = aggregate([image_stats(gt, pred, faithful=True) for _, gt, pred in items], names)
    summary.pop("n_images")
    return summary


def assert_summary_equal(result: dict, expected: dict, tol: float = 1e-12) -> None:
    assert set(result) == set(expected)
    for key, value in expected.items():
        got = float(result[key])
        assert (math.isnan(got) and math.isnan(value)) or abs(got - value) <= tol, f"{key}: {got} vs {value}"


def update_all(metric: InstanceSegMetrics, items, per_image: bool = False) -> None:
    for image_id, gt, pred in items:
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None],
                      image_ids=[image_id] if per_image else None)


def test_compute_matches_aggregate_for_every_input_form(images):
    metric = InstanceSegMetrics(names=NAMES)
    gts, preds = [gt for _, gt, _ in images], [pred for _, _, pred in images]
    metric.update(torch.from_numpy(np.stack(preds[:3])), torch.from_numpy(np.stack(gts[:3])))  # B x H x W tensor
    metric.update(preds[3:5], gts[3:5])  # list of arrays
    metric.update(preds[5], gts[5])  # one H x W map
    result = metric.compute()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 and v.ndim == 0 for v in result.values())
    assert_summary_equal(result, expected_summary(images))
    assert float(result["aji_n_undefined"]) == 1  # the empty/empty image


def test_two_halves_merged_equal_one_object(images):
    whole = InstanceSegMetrics(names=NAMES)
    update_all(whole, images)
    first, second = InstanceSegMetrics(names=NAMES), InstanceSegMetrics(names=NAMES)
    update_all(first, images[:3])
    update_all(second, images[3:])
    # states summed by hand, as dist_reduce_fx="sum" does across ranks
    summed = InstanceSegMetrics(names=NAMES)
    for name in summed._defaults:
        setattr(summed, name, getattr(first, name) + getattr(second, name))
    summed._update_count = 1
    first.merge_state(second)
    expected = {k: float(v) for k, v in whole.compute().items()}
    assert_summary_equal(first.compute(), expected, tol=1e-12)
    assert_summary_equal(summed.compute(), expected, tol=1e-12)
    assert_summary_equal(expected, expected_summary(images), tol=1e-12)


def test_per_image_rows_drop_padding_duplicates(images):
    first = InstanceSegMetrics(names=NAMES, per_image=True)
    second = InstanceSegMetrics(names=NAMES, per_image=True)
    update_all(first, images[:4], per_image=True)
    update_all(second, images[4:] + images[:2], per_image=True)  # padded with two images seen by `first`
    first.merge_state(second)
    assert_summary_equal(first.compute(), expected_summary(images), tol=1e-12)
    rows = first.per_image_rows()
    by_id = sorted(images, key=lambda item: item[0])
    assert [row["image_id"] for row in rows] == [image_id for image_id, _, _ in by_id]
    for row, (_, gt, pred) in zip(rows, by_id, strict=True):
        stats = image_stats(gt, pred, faithful=True)
        for name in NAMES:
            value = stats.values[name]
            assert (math.isnan(value) and math.isnan(row[name])) or row[name] == value, name
        assert row["aji_den"] == stats.aji_den


def test_duplicates_are_counted_twice_without_per_image(images):
    metric = InstanceSegMetrics(names=["aji"])
    update_all(metric, images[:2] + images[:1])
    assert float(metric.aji_defined) == 3  # documents why per_image=True exists


def test_per_image_needs_ids_and_shapes_must_match(images):
    _, gt, pred = images[0]
    with pytest.raises(ValueError, match="image_ids"):
        InstanceSegMetrics(per_image=True).update(pred, gt)
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        InstanceSegMetrics().update([pred, pred], [gt])
    with pytest.raises(ValueError, match="per_image_rows"):
        InstanceSegMetrics().per_image_rows()


def test_semantic_metrics_use_binary_maps(images):
    metric = SemanticSegMetrics()
    for _, gt, pred in images:
        metric.update(torch.from_numpy(pred > 0)[None], torch.from_numpy(gt > 0)[None])
    expected = expected_summary(images, names=("dice", "iou_fg", "miou_bin"))
    assert_summary_equal(metric.compute(), expected, tol=1e-12)
    with pytest.raises(ValueError, match="aji"):
        SemanticSegMetrics(names=["aji"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, shards, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        padded = InstanceSegMetrics(names=NAMES, per_image=True)
        update_all(padded, shards[rank], per_image=True)
        result = {k: float(v) for k, v in padded.compute().items()}
        rows = padded.per_image_rows()
        if rank == 0:
            with open(out_path, "w") as handle:
                json.dump({"result": result, "ids": [r["image_id"] for r in rows]}, handle)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run_equals_one_process(images, tmp_path):
    """DistributedSampler-style shards (rank 1 padded with a duplicate of image 0): exact per-image results."""
    shards = [images[0::2], images[1::2] + images[:1]]
    out_path = tmp_path / "rank0.json"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), shards, str(out_path)), nprocs=2, join=True,
                       start_method="fork")  # fork: no re-import of torch in the children
    saved = json.loads(out_path.read_text())
    assert_summary_equal(saved["result"], expected_summary(images), tol=1e-12)
    assert saved["ids"] == sorted(image_id for image_id, _, _ in images)
