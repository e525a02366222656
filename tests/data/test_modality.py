"""Modality naming: mean HSV, centroid naming, seed / order invariance, and DSB2018 stage1_train's modality_guess."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.color import rgb2hsv

from cellseg.data.modality import assign_modalities, classify_modalities, mean_hsv, name_clusters
from cellseg.utils.io import read_image

# modality_guess values of the shared DSB2018 index.csv -> the names used here
GUESS_TO_MODALITY = {"fluorescence": "fluorescence", "color(HE/brightfield)": "histopathology",
                     "brightfield_gray": "brightfield"}


def test_mean_hsv_equals_the_per_pixel_mean():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    image[:5] = (10, 200, 30)  # repeated colours
    np.testing.assert_allclose(mean_hsv(image), rgb2hsv(image).reshape(-1, 3).mean(axis=0), atol=1e-12)
    with pytest.raises(ValueError, match="expected H x W x 3 uint8"):
        mean_hsv(image[..., 0])


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_name_clusters_from_centroids_in_any_order(order):
    centroids = np.array([[0.0, 0.0, 0.05], [0.7, 0.3, 0.8], [0.1, 0.05, 0.85]])  # fluo, H&E, bright-field
    names = ["fluorescence", "histopathology", "brightfield"]
    assert name_clusters(centroids[list(order)]) == [names[i] for i in order]


def _synthetic_features(rng):
    groups = [([0.0, 0.0, 0.05], 30), ([0.75, 0.3, 0.75], 12), ([0.05, 0.04, 0.85], 6)]
    features = np.concatenate([np.array(c) + rng.normal(0, 0.01, (n, 3)) for c, n in groups])
    truth = ["fluorescence"] * 30 + ["histopathology"] * 12 + ["brightfield"] * 6
    return features, truth


def test_classification_is_invariant_to_seed_and_row_order():
    rng = np.random.default_rng(1)
    features, truth = _synthetic_features(rng)
    for seed in (0, 1, 7):
        assert classify_modalities(features, seed=seed) == truth
    perm = rng.permutation(len(truth))
    assert classify_modalities(features[perm], seed=3) == [truth[i] for i in perm]
    with pytest.raises(ValueError, match="fewer than 3 distinct points"):
        classify_modalities(np.zeros((5, 3)))


def test_assign_modalities_on_files(tmp_path):
    colours = {"a": (15, 15, 15), "b": (20, 20, 22), "c": (210, 210, 210), "d": (190, 100, 170), "e": (180, 90, 160)}
    for name, colour in colours.items():
        Image.fromarray(np.full((4, 5, 3), colour, np.uint8)).save(tmp_path / f"{name}.png")
    names = assign_modalities(sorted(tmp_path.glob("*.png")), seed=5)
    assert names == {"a": "fluorescence", "b": "fluorescence", "c": "brightfield", "d": "histopathology",
                     "e": "histopathology"}


def test_real_dsb2018_stage1_train_matches_modality_guess(shared_data):
    split = shared_data / "DSB2018" / "stage1_train"
    if not split.is_dir():
        pytest.skip(f"{split} is absent")
    index = pd.read_csv(split / "index.csv", dtype={"id": str})
    assert set(index["modality_guess"]) == set(GUESS_TO_MODALITY)
    expected = index["modality_guess"].map(GUESS_TO_MODALITY).tolist()
    features = np.stack([mean_hsv(read_image(split / "images" / f"{i}.png")) for i in index["id"]])
    for seed in (0, 12345):
        names = classify_modalities(features, seed=seed)
        assert names == expected, f"seed {seed}: {sum(a != b for a, b in zip(names, expected, strict=True))} differ"
    assert pd.Series(expected).value_counts().to_dict() == {"fluorescence": 541, "histopathology": 107,
                                                            "brightfield": 16}
