"""EMA arithmetic, the tau rule, sharding, the checkpoint state and sidecar pruning of Scribble2Label's maps (docs/methods/s2l.md#ema-maps)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cellseg.data.transforms import CropGeometry, apply_geometry
from cellseg.methods.s2l.ema_maps import (
    EmaMaps,
    compute_shard_updates,
    ema_blend,
    is_update_epoch,
    prune_sidecars,
    pseudo_labels,
    shard,
    update_ema_maps,
)

IGNORE = 250


def test_pseudo_labels_follow_the_tau_rule_with_an_ignore_band():
    ema = torch.tensor([0.0, 0.1, 0.19, 0.21, 0.5, 0.79, 0.81, 0.95, 1.0, float("nan")])
    expected = [0, 0, 0, IGNORE, IGNORE, IGNORE, 1, 1, 1, IGNORE]
    assert pseudo_labels(ema, tau=0.8, ignore_index=IGNORE).tolist() == expected
    # a stricter tau widens the ignore band
    strict = pseudo_labels(ema, tau=0.95, ignore_index=IGNORE).tolist()
    assert strict == [0] + [IGNORE] * 7 + [1, IGNORE]


def test_pseudo_labels_are_strict_inequalities_on_float16_maps():
    ema = torch.tensor([0.25, 0.75], dtype=torch.float16)  # exactly representable
    assert pseudo_labels(ema, tau=0.75, ignore_index=IGNORE).tolist() == [IGNORE, IGNORE]
    assert pseudo_labels(ema, tau=0.7, ignore_index=IGNORE).tolist() == [0, 1]


def test_blend_is_alpha_p_plus_one_minus_alpha_previous():
    p1 = np.array([[0.9, 0.1], [0.5, 1.0]], dtype=np.float32)
    p2 = np.array([[0.7, 0.3], [0.0, 1.0]], dtype=np.float32)
    maps = EmaMaps.zeros(["a"], [(2, 2)], dtype="float32")
    for epoch, p in enumerate((p1, p2)):
        maps.apply({"a": ema_blend(maps["a"], torch.from_numpy(p), alpha=0.2)}, epoch)
    by_hand = 0.2 * p2 + 0.8 * (0.2 * p1 + 0.8 * 0.0)
    np.testing.assert_allclose(maps["a"].numpy(), by_hand, rtol=1e-6)
    assert maps.n_updates == 2 and maps.last_update_epoch == 1


def test_blend_keeps_the_map_dtype_and_rounds_once_per_update():
    previous = torch.tensor([0.3, 0.6], dtype=torch.float16)
    out = ema_blend(previous, torch.tensor([0.123456, 0.987654]), alpha=0.2)
    assert out.dtype == torch.float16
    expected = (0.2 * torch.tensor([0.123456, 0.987654]) + 0.8 * previous.float()).half()
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="EMA map is"):
        ema_blend(previous, torch.zeros(3), alpha=0.2)


def test_update_epochs_are_4_9_14_for_period_5():
    assert [e for e in range(20) if is_update_epoch(e, 5)] == [4, 9, 14, 19]
    assert [e for e in range(4) if is_update_epoch(e, 1)] == [0, 1, 2, 3]


def test_shards_are_disjoint_and_cover_every_item_without_padding():
    for n, world in [(5, 2), (3, 4), (8, 3)]:
        parts = [list(shard(n, r, world)) for r in range(world)]
        flat = sorted(i for part in parts for i in part)
        assert flat == list(range(n))


def test_crop_cuts_the_map_exactly_like_the_training_crop_and_pads_with_nan():
    rng = np.random.default_rng(0)
    values = rng.random((20, 30)).astype(np.float32)
    maps = EmaMaps({"a": torch.from_numpy(values)}, dtype="float32")
    geometry = CropGeometry(top=3, left=7, size=16, hflip=True, vflip=False, rot90=3)
    np.testing.assert_array_equal(maps.crop("a", geometry), apply_geometry(values, geometry, fill=np.nan))
    padded = maps.crop("a", CropGeometry(top=0, left=0, size=24))  # 20 rows < 24: 4 padded rows
    assert np.isnan(padded[20:]).all() and not np.isnan(padded[:20]).any()
    # the padding becomes "ignore" in the pseudo labels
    assert (pseudo_labels(torch.from_numpy(padded), 0.8, IGNORE)[20:] == IGNORE).all()


def test_update_runs_every_image_once_in_eval_and_applies_all():
    images = [{"id": f"i{k}", "image": torch.full((3, 4 + k, 5), float(k))} for k in range(3)]
    maps = EmaMaps.zeros([d["id"] for d in images], [(4 + k, 5) for k in range(3)], dtype="float32")
    seen = []

    def predict(image):
        seen.append(float(image[0, 0, 0]))
        return np.full(image.shape[1:], 0.5, dtype=np.float32)

    update_ema_maps(maps, images, predict, alpha=0.5, epoch=4)
    assert sorted(seen) == [0.0, 1.0, 2.0]
    assert all(torch.all(maps[i] == 0.25) for i in maps.ids)
    assert maps.last_update_epoch == 4


def test_a_partial_update_is_refused():
    maps = EmaMaps.zeros(["a", "b"], [(2, 2), (2, 2)])
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        maps.apply({"a": torch.zeros(2, 2)}, epoch=0)


def test_checkpoint_state_round_trips_bit_exactly_with_weights_only():
    rng = np.random.default_rng(1)
    maps = EmaMaps({"x": torch.from_numpy(rng.random((7, 9)).astype(np.float32)),
                    "y": torch.from_numpy(rng.random((5, 3)).astype(np.float32))}, dtype="float16",
                   last_update_epoch=9, n_updates=2)
    buffer = io.BytesIO()
    torch.save({"s2l_ema": maps.state_dict()}, buffer)
    buffer.seek(0)
    restored = EmaMaps.from_state_dict(torch.load(buffer, weights_only=True)["s2l_ema"])
    assert restored.ids == maps.ids
    for image_id in maps.ids:
        assert restored[image_id].dtype == torch.float16
        assert torch.equal(restored[image_id], maps[image_id])
    assert (restored.last_update_epoch, restored.n_updates) == (9, 2)


def test_restored_maps_of_other_images_are_refused_with_a_clear_error():
    maps = EmaMaps.zeros(["a", "b"], [(4, 4), (4, 4)])
    maps.check_matches(["b", "a"], [(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="do not match the training images.*'c'"):
        maps.check_matches(["a", "c"])
    with pytest.raises(ValueError, match="map of b is \\(4, 4\\) but the training image is \\(4, 5\\)"):
        maps.check_matches(["a", "b"], [(4, 4), (4, 5)])


def test_shard_updates_of_two_ranks_together_equal_one_process():
    images = [{"id": f"i{k}", "image": torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(k))}
              for k in range(5)]
    maps = EmaMaps.zeros([d["id"] for d in images], [(6, 6)] * 5)

    def predict(image):
        return image.mean(0).numpy()

    single = compute_shard_updates(maps, images, predict, 0.2)
    parts = [compute_shard_updates(maps, images, predict, 0.2, rank=r, world_size=2) for r in range(2)]
    assert not set(parts[0]) & set(parts[1])
    merged = {**parts[0], **parts[1]}
    assert set(merged) == set(single) and all(torch.equal(merged[k], single[k]) for k in single)


def test_pruning_keeps_every_file_when_a_checkpoint_cannot_be_read(tmp_path):
    folder, ck = tmp_path / "ema_maps", tmp_path / "ck"
    folder.mkdir(), ck.mkdir()
    for n in (1, 2, 3):
        (folder / f"ema_update{n:05d}.pt").write_bytes(b"maps")
    torch.save({"s2l_ema": {"sidecar": str(folder / "ema_update00002.pt"), "sha256": "x"}}, ck / "a.ckpt")
    assert [p.name for p in prune_sidecars(folder, [ck], keep=folder / "ema_update00003.pt")] == ["ema_update00001.pt"]
    (ck / "broken.ckpt").write_bytes(b"not a checkpoint")
    (folder / "ema_update00004.pt").write_bytes(b"maps")
    assert prune_sidecars(folder, [ck], keep=folder / "ema_update00004.pt") == []
    assert len(list(folder.glob("*.pt"))) == 3
