"""CachedWeakLabels through ScribbleLabels: determinism, reuse, invalidation, interruption and verify()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellseg.data.weak import ScribbleLabels
from cellseg.utils.hashing import sha256_file
from cellseg.utils.ignore import IGNORE_CLASS
from cellseg.utils.io import read_label, write_label, write_mask_uint8


class CountingScribbles(ScribbleLabels):
    """Counts generate() calls; fails on call number `fail_on` (1-based) when set."""

    def __init__(self, *args, fail_on: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.fail_on = fail_on

    def generate(self, image_id, label, rng):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("simulated interruption")
        return super().generate(image_id, label, rng)


def file_bytes(paths: dict) -> dict:
    return {image_id: path.read_bytes() for image_id, path in paths.items()}


def test_prepare_writes_scribbles_and_meta(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    generator = ScribbleLabels(cache_dir=tmp_path / "cache", ratio=0.5, seed=0)
    paths = generator.prepare(layout, ids)

    assert list(paths) == ids
    folder = paths[ids[0]].parent
    assert folder.parent == tmp_path / "cache" / "scribble" and len(folder.name) == 16
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"].startswith(folder.name) and meta["ids"] == ids
    assert meta["params"]["ratio"] == 0.5 and meta["params"]["seed"] == 0
    for image_id, path in paths.items():
        assert meta["outputs_sha256"][image_id] == sha256_file(path)
        assert meta["sources_sha256"][image_id] == sha256_file(layout.label_path(image_id))
        target = generator.read_target(path)
        assert target.dtype == np.uint8 and target.shape == synthetic_labels[image_id].shape
        mask = synthetic_labels[image_id] > 0
        assert mask[target == 1].all() and not mask[target == 0].any()
        assert (target == 1).any()


def test_same_seed_byte_identical_across_folders_and_orders(
    make_layout, monuseg_crops, synthetic_labels, tmp_path
):
    labels = {**monuseg_crops, **synthetic_labels}
    layout = make_layout(labels)
    ids = sorted(labels)
    first = ScribbleLabels(cache_dir=tmp_path / "a", ratio=0.3, seed=5).prepare(layout, ids)
    second = ScribbleLabels(cache_dir=tmp_path / "b", ratio=0.3, seed=5).prepare(layout, ids[::-1])
    assert file_bytes(first) == file_bytes(second)
    assert first[ids[0]].parent.name == second[ids[0]].parent.name  # same key

    other_seed = ScribbleLabels(cache_dir=tmp_path / "a", ratio=0.3, seed=6).prepare(layout, ids)
    assert other_seed[ids[0]].parent != first[ids[0]].parent
    differing = [i for i in ids if other_seed[i].read_bytes() != first[i].read_bytes()]
    assert len(differing) >= len(ids) - 1, "a different seed should change (nearly) every image"


def test_one_image_does_not_depend_on_the_others(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    all_ids = ScribbleLabels(cache_dir=tmp_path / "a", seed=1).prepare(layout, ids)
    alone = ScribbleLabels(cache_dir=tmp_path / "b", seed=1).prepare(layout, ids[2:3])
    assert alone[ids[2]].read_bytes() == all_ids[ids[2]].read_bytes()


def test_second_prepare_reuses_the_cache(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    first = CountingScribbles(cache_dir=tmp_path / "cache", seed=0)
    paths = first.prepare(layout, ids)
    assert first.calls == len(ids)

    again = CountingScribbles(cache_dir=tmp_path / "cache", seed=0)
    assert again.prepare(layout, ids) == paths
    assert again.calls == 0

    paths[ids[1]].unlink()  # an incomplete cache is regenerated
    assert again.prepare(layout, ids) == paths
    assert again.calls == len(ids) and paths[ids[1]].is_file()


@pytest.mark.parametrize("change", [{"ratio": 0.5}, {"seed": 1}, {"ignore_index": 250}, {"min_distance": 3}])
def test_changed_parameter_gives_a_new_folder(make_layout, synthetic_labels, tmp_path, change):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    base = ScribbleLabels(cache_dir=tmp_path, ratio=0.3, seed=0).prepare(layout, ids)
    changed = CountingScribbles(cache_dir=tmp_path, **{"ratio": 0.3, "seed": 0, **change})
    new = changed.prepare(layout, ids)
    assert new[ids[0]].parent != base[ids[0]].parent
    assert changed.calls == len(ids)
    assert (base[ids[0]].parent / "meta.json").is_file()  # the old cache is left intact


def test_changed_source_label_gives_a_new_key(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    before = ScribbleLabels(cache_dir=tmp_path / "cache").prepare(layout, ids)
    label = read_label(layout.label_path(ids[0]))
    label[:5, :5] = label.max() + 1  # one more nucleus in a corner
    write_label(layout.label_path(ids[0]), label)
    generator = CountingScribbles(cache_dir=tmp_path / "cache")
    after = generator.prepare(layout, ids)
    assert after[ids[0]].parent != before[ids[0]].parent
    assert generator.calls == len(ids)


def test_interrupted_generation_leaves_no_meta_and_rerun_completes(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    failing = CountingScribbles(cache_dir=tmp_path / "cache", seed=0, fail_on=2)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        failing.prepare(layout, ids)
    folders = list((tmp_path / "cache" / "scribble").iterdir())
    assert len(folders) == 1 and not (folders[0] / "meta.json").exists()
    assert not list(folders[0].glob("*.tmp*")), "a temporary file was left behind"

    rerun = CountingScribbles(cache_dir=tmp_path / "cache", seed=0)
    paths = rerun.prepare(layout, ids)
    assert rerun.calls == len(ids)
    assert (folders[0] / "meta.json").is_file() and all(p.parent == folders[0] for p in paths.values())
    clean = ScribbleLabels(cache_dir=tmp_path / "clean", seed=0).prepare(layout, ids)
    assert file_bytes(paths) == file_bytes(clean)


def test_verify_detects_a_tampered_file(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    ids = sorted(synthetic_labels)
    generator = ScribbleLabels(cache_dir=tmp_path / "cache", seed=0)
    assert generator.verify(layout, ids) == ids  # nothing cached yet
    paths = generator.prepare(layout, ids)
    assert generator.verify(layout, ids) == []

    tampered = generator.read_target(paths[ids[2]]).copy()
    tampered[0, 0] = 1 if tampered[0, 0] != 1 else IGNORE_CLASS
    write_mask_uint8(paths[ids[2]], tampered)
    assert generator.verify(layout, ids) == [ids[2]]


def test_duplicate_ids_and_missing_label_are_clear_errors(make_layout, synthetic_labels, tmp_path):
    layout = make_layout(synthetic_labels)
    generator = ScribbleLabels(cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="duplicate image ids"):
        generator.prepare(layout, ["img0", "img0"])
    with pytest.raises(FileNotFoundError, match="no_such_image"):
        generator.prepare(layout, ["img0", "no_such_image"])


def test_cache_dir_is_required():
    with pytest.raises(ValueError, match="cache_dir"):
        ScribbleLabels(cache_dir="")
