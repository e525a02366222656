"""Stage 1a: handcrafted features, running channel statistics, feature normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from coin_synth import grey_image, he_image
from scipy import ndimage as ndi
from skimage import color

from cellseg.methods.coin.features import (
    FEATURE_NAMES,
    N_FEATURES,
    RunningChannelStats,
    handcrafted_features,
    normalise_features,
)
from cellseg.methods.coin.ucis import stain_channel


def _channel(feats, name):
    return feats[FEATURE_NAMES.index(name)]


def test_feature_layout_is_the_21_channels_of_the_spec(nuclei_label):
    assert N_FEATURES == 21 and len(set(FEATURE_NAMES)) == 21
    feats = handcrafted_features(he_image(nuclei_label))
    assert feats.shape == (21, *nuclei_label.shape) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_colour_channels_are_hed_and_lab(nuclei_label):
    image = he_image(nuclei_label)
    feats = handcrafted_features(image)
    hed, lab = color.rgb2hed(image), color.rgb2lab(image)
    for k, name in enumerate(("od_h", "od_e", "od_d")):
        np.testing.assert_allclose(_channel(feats, name), hed[..., k], atol=1e-4)
    for k, name in enumerate(("lab_l", "lab_a", "lab_b")):
        np.testing.assert_allclose(_channel(feats, name), lab[..., k], atol=1e-2)


def test_filtered_channels_follow_the_stain_channel(nuclei_label):
    image = he_image(nuclei_label)
    feats = handcrafted_features(image)
    stain = stain_channel(image, "hematoxylin")
    np.testing.assert_allclose(_channel(feats, "stain_gauss_2"), ndi.gaussian_filter(stain, 2.0), atol=1e-5)
    lightness = color.rgb2lab(image)[..., 0]
    np.testing.assert_allclose(_channel(feats, "l_gauss_4"), ndi.gaussian_filter(lightness, 4.0), atol=1e-2)
    # bright blobs respond positively to the sign-flipped LoG at their centre, negatively just outside
    log3 = _channel(feats, "stain_log_3")
    assert log3[62, 62] > 0 > log3[62, 62 + 13]
    # gradients peak at the nucleus rim, not in its centre or far away
    grad = _channel(feats, "stain_gradmag_1")
    assert grad[62, 72] > 5 * max(grad[62, 62], grad[5, 110])
    major, minor = _channel(feats, "stain_tensor_1_major"), _channel(feats, "stain_tensor_1_minor")
    assert np.all(major >= minor - 1e-7) and major[62, 72] > major[62, 62]


def test_grey_images_use_intensity_for_od_lab_and_stain(nuclei_label):
    image = grey_image(nuclei_label, fluorescence=True)
    feats = handcrafted_features(image)
    intensity = stain_channel(image, "intensity")
    for name in ("od_h", "od_e", "od_d", "lab_l", "lab_a", "lab_b"):
        np.testing.assert_allclose(_channel(feats, name), intensity, atol=1e-6)
    np.testing.assert_allclose(_channel(feats, "stain_gauss_1"), ndi.gaussian_filter(intensity, 1.0), atol=1e-5)
    np.testing.assert_allclose(handcrafted_features(image, grey=True), feats)


def test_running_stats_equal_the_statistics_of_the_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, (4, h, 9)).astype(np.float32) for h in (5, 11, 1)]
    masks = [rng.random((p.shape[1], 9)) > 0.3 for p in parts]
    stats, masked = RunningChannelStats(4), RunningChannelStats(4)
    for part, mask in zip(parts, masks, strict=True):
        stats.update(part)
        masked.update(part, mask)
    flat = np.concatenate([p.reshape(4, -1) for p in parts], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.var, flat.var(axis=1), rtol=1e-10)
    picked = np.concatenate([p.reshape(4, -1)[:, m.ravel()] for p, m in zip(parts, masks, strict=True)], axis=1)
    picked = picked.astype(np.float64)
    np.testing.assert_allclose(masked.mean, picked.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(masked.std, picked.std(axis=1), rtol=1e-10)
    restored = RunningChannelStats.from_state_dict(stats.state_dict())
    np.testing.assert_array_equal(restored.mean, stats.mean)
    assert restored.count == stats.count == flat.shape[1]


def test_running_stats_errors():
    with pytest.raises(ValueError, match="empty"):
        _ = RunningChannelStats(3).var
    with pytest.raises(ValueError, match=r"expected \(3, H, W\)"):
        RunningChannelStats(3).update(np.zeros((4, 2, 2)))


def test_normalise_features_z_scores_then_unit_norm():
    rng = np.random.default_rng(2)
    feats = rng.normal(0, 1, (3, 6, 7)).astype(np.float32) * np.array([1, 10, 100], np.float32)[:, None, None]
    feats[2] += 50
    stats = RunningChannelStats(3)
    stats.update(feats)
    out = normalise_features(feats, stats)
    z = (feats - feats.mean(axis=(1, 2), keepdims=True)) / feats.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, z / np.linalg.norm(z, axis=0, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), 1.0, atol=1e-5)
    # a constant channel (std 0) gives zeros, not NaN
    feats[0] = 7.0
    stats = RunningChannelStats(3)
    stats.update(feats)
    out = normalise_features(feats, stats)
    assert np.isfinite(out).all() and np.abs(out[0]).max() == 0
