"""Stage 1b: prototypes (running sums), cosine heatmaps, heatmap normalisation (A3.1-A3.3)."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.methods.coin.prototypes import (
    PrototypeAccumulator,
    background_prototype,
    cosine_heatmaps,
    minmax_per_channel,
    normalise_heatmaps,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=0, keepdims=True)


def test_running_sum_prototype_equals_concatenate_then_mean():
    rng = np.random.default_rng(0)
    acc = PrototypeAccumulator(8)
    selected = []
    for h, w in [(30, 20), (7, 50), (64, 64)]:  # images of different sizes (and zooms: more calls)
        feats = _unit(rng.normal(size=(8, h, w)).astype(np.float32))
        mask = rng.random((h, w)) > 0.6
        acc.add(feats, mask)
        selected.append(feats[:, mask])
    reference = np.concatenate(selected, axis=1).mean(axis=1)  # the reference's GPU concatenation
    np.testing.assert_allclose(acc.mean, reference, atol=1e-6)
    assert acc.count == sum(s.shape[1] for s in selected)
    restored = PrototypeAccumulator.from_state_dict(acc.state_dict())
    np.testing.assert_array_equal(restored.mean, acc.mean)


def test_prototype_errors():
    with pytest.raises(ValueError, match="no foreground pixel"):
        _ = PrototypeAccumulator(3).mean
    with pytest.raises(ValueError, match="mask has shape"):
        PrototypeAccumulator(3).add(np.zeros((3, 4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="no background pixel"):
        background_prototype(np.zeros((3, 2, 2)), np.ones((2, 2), int))


def test_background_prototype_is_the_mean_over_u_zero():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(5, 6, 6))
    instances = np.zeros((6, 6), int)
    instances[1:4, 2:5] = 3
    np.testing.assert_allclose(background_prototype(feats, instances), feats[:, instances == 0].mean(axis=1))


def test_cosine_heatmaps():
    rng = np.random.default_rng(2)
    feats = _unit(rng.normal(size=(6, 5, 4)))
    mu_bg, mu_fg = rng.normal(size=6), 3.0 * feats[:, 2, 1]  # fg prototype parallel to one pixel
    maps = cosine_heatmaps(feats, mu_bg, mu_fg)
    assert maps.shape == (2, 5, 4) and maps.dtype == np.float32
    expected_bg = np.einsum("dhw,d->hw", feats, mu_bg) / np.linalg.norm(mu_bg)
    np.testing.assert_allclose(maps[0], expected_bg, atol=1e-6)
    assert maps[1, 2, 1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(maps <= 1 + 1e-6) and np.all(maps >= -1 - 1e-6)


def test_normalise_heatmaps_minmax_then_max_rule():
    heatmaps = np.array([
        [[0.2, 0.4], [0.6, 1.0]],   # bg: min 0.2, max 1.0
        [[0.5, 0.3], [0.1, 0.9]],   # fg: min 0.1, max 0.9
    ])
    out = normalise_heatmaps(heatmaps)
    fg = (heatmaps[1] - 0.1) / 0.8
    bg = np.maximum((heatmaps[0] - 0.2) / 0.8, 1 - fg)
    np.testing.assert_allclose(out[1], fg)
    np.testing.assert_allclose(out[0], bg)
    assert out[0, 0, 1] == pytest.approx(0.75)  # 1 - fg wins: (0.4-0.2)/0.8 = 0.25 < 1 - 0.25


def test_minmax_of_a_flat_channel_is_zero_not_nan():
    maps = np.stack([np.full((3, 3), 0.7), np.arange(9.0).reshape(3, 3)])
    out = minmax_per_channel(maps)
    assert np.all(out[0] == 0) and out[1].max() == 1 and out[1].min() == 0
    tiny = np.stack([np.array([[0.0, 2e-6]]), np.array([[0.0, 1.0]])])
    np.testing.assert_allclose(minmax_per_channel(tiny)[0], [[0.0, 2e-6 / 1e-5]])  # denominator clipped at 1e-5
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        normalise_heatmaps(np.zeros((3, 2, 2)))
