"""S2L 60/20/20 split: deterministic, disjoint, per-modality proportions, persisted file, read errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellseg.data.splits import read_split_file, s2l_split, split_file_name, write_split_file

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_SEED0 = REPO_ROOT / "configs" / "data" / "splits" / "s2l_602020_seed0.csv"
GUESS_TO_MODALITY = {"fluorescence": "fluorescence", "color(HE/brightfield)": "histopathology",
                     "brightfield_gray": "brightfield"}
SIZES = {"fluorescence": 541, "histopathology": 107, "brightfield": 16}


def _ids_with_modality() -> dict[str, str]:
    return {f"{modality[:4]}{k:03d}": modality for modality, n in SIZES.items() for k in range(n)}


def test_split_is_deterministic_and_independent_of_input_order():
    pairs = list(_ids_with_modality().items())
    first = s2l_split(dict(pairs), seed=0)
    shuffled = [pairs[i] for i in np.random.default_rng(3).permutation(len(pairs))]
    pd.testing.assert_frame_equal(s2l_split(shuffled, seed=0), first)
    pd.testing.assert_frame_equal(s2l_split(pd.DataFrame(pairs, columns=["id", "modality"]), seed=0), first)
    assert not s2l_split(dict(pairs), seed=1)["split"].equals(first["split"])


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_is_disjoint_complete_and_60_20_20_per_modality(seed):
    ids = _ids_with_modality()
    frame = s2l_split(ids, seed=seed)
    assert list(frame.columns) == ["id", "modality", "split"]
    assert sorted(frame["id"]) == sorted(ids) and frame["id"].is_unique
    assert dict(zip(frame["id"], frame["modality"], strict=True)) == ids
    for modality, n in SIZES.items():
        counts = frame[frame["modality"] == modality]["split"].value_counts()
        for split, share in [("train", 0.6), ("val", 0.2), ("test", 0.2)]:
            assert abs(counts[split] - share * n) <= 1, (modality, split, counts[split], share * n)


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValueError, match="more than once"):
        s2l_split([("a", "fluorescence"), ("a", "brightfield")], seed=0)


def test_write_and_read_split_file(tmp_path):
    path = write_split_file(_ids_with_modality(), seed=7, out_dir=tmp_path)
    assert path == tmp_path / split_file_name(7) == tmp_path / "s2l_602020_seed7.csv"
    train = read_split_file(path, "train")
    val, test = read_split_file(path, "val"), read_split_file(path, "test")
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert len(train) + len(val) + len(test) == sum(SIZES.values())
    fluo_test = read_split_file(path, "test", modality="fluorescence")
    assert len(fluo_test) == 108 and set(fluo_test) <= set(test) and fluo_test == sorted(fluo_test)


def test_read_split_file_errors(tmp_path):
    path = write_split_file({"a": "fluorescence", "b": "fluorescence"}, seed=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"split 'training'; expected one of \['train', 'val', 'test'\]"):
        read_split_file(path, "training")
    with pytest.raises(ValueError, match=r"no image of modality 'histo'; the file has \['fluorescence'\]"):
        read_split_file(path, "train", modality="histo")
    with pytest.raises(FileNotFoundError, match="no such split file"):
        read_split_file(tmp_path / "none.csv", "train")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,split\na,train\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['modality'\]"):
        read_split_file(bad, "train")
    bad.write_text("id,modality,split\na,fluorescence,holdout\n")
    with pytest.raises(ValueError, match=r"unknown split names \['holdout'\]"):
        read_split_file(bad, "train")


def test_committed_seed0_file_is_the_split_of_dsb2018_stage1_train(shared_data):
    index_csv = shared_data / "DSB2018" / "stage1_train" / "index.csv"
    if not index_csv.is_file():
        pytest.skip(f"{index_csv} is absent")
    index = pd.read_csv(index_csv, dtype={"id": str})
    # modality_guess equals the k-means naming on these 664 images (test_modality.py checks it on the pixels).
    expected = s2l_split(dict(zip(index["id"], index["modality_guess"].map(GUESS_TO_MODALITY), strict=True)), seed=0)
    committed = pd.read_csv(COMMITTED_SEED0, dtype=str)
    pd.testing.assert_frame_equal(committed, expected)
    assert len(read_split_file(COMMITTED_SEED0, "train", modality="fluorescence")) == 324
