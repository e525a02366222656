"""Stage 1b: OT re-weighting (A3.3-A3.6), no-OT ablation, argmax, CRF extra; a tiny stage-0/1 chain."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from coin_synth import he_image

from cellseg.methods.coin.features import RunningChannelStats, handcrafted_features, normalise_features
from cellseg.methods.coin.prototypes import PrototypeAccumulator, background_prototype, cosine_heatmaps
from cellseg.methods.coin.refine import CRF_MISSING, crf_refine, ot_reweight, refine_with_ot
from cellseg.methods.coin.sinkhorn import transport_plan
from cellseg.methods.coin.ucis import classical_ucis


def _raw_heatmaps(seed=0, shape=(12, 10)):
    rng = np.random.default_rng(seed)
    fg = rng.uniform(-0.2, 0.9, shape)
    bg = 0.7 - 0.6 * fg + rng.normal(0, 0.05, shape)
    return np.stack([bg, fg])


def _minmax(x):
    return (x - x.min()) / max(x.max() - x.min(), 1e-5)


def test_ot_reweight_follows_the_a3_steps():
    heatmaps = _raw_heatmaps()
    # A3.3
    fg = _minmax(heatmaps[1])
    bg = np.maximum(_minmax(heatmaps[0]), 1 - fg)
    # A3.4: cost 1 - h, plan min-max per class column over pixels
    plan = transport_plan(np.stack([1 - bg.ravel(), 1 - fg.ravel()], axis=1))
    t_bg, t_fg = _minmax(plan[:, 0]).reshape(fg.shape), _minmax(plan[:, 1]).reshape(fg.shape)
    # A3.5
    fg2 = _minmax(fg * t_fg)
    bg2 = np.maximum(_minmax(bg * t_bg), 1 - fg2)
    out = ot_reweight(heatmaps)
    np.testing.assert_allclose(out[1], fg2, atol=1e-12)
    np.testing.assert_allclose(out[0], bg2, atol=1e-12)
    np.testing.assert_array_equal(refine_with_ot(heatmaps), fg2 > bg2)  # A3.8, ties -> background
    np.testing.assert_array_equal(refine_with_ot(heatmaps, gamma=3), fg2**3 > bg2)  # A3.6


def test_no_ot_ablation_uses_a_constant_background():
    heatmaps = _raw_heatmaps(seed=2)
    heatmaps[1, 0, 0] = 0.4  # a tie goes to the background
    out = refine_with_ot(heatmaps, ot_enabled=False, no_ot_threshold=0.4)
    np.testing.assert_array_equal(out, heatmaps[1] > 0.4)
    assert not out[0, 0]
    out_mean = refine_with_ot(heatmaps, ot_enabled=False, no_ot_threshold=-1)
    np.testing.assert_array_equal(out_mean, heatmaps[1] > heatmaps[1].mean())


def test_crf_without_the_extra_fails_with_the_spec_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # make the import fail even where it is installed
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image = np.zeros((12, 10, 3), np.uint8)
    with pytest.raises(ImportError) as info:
        refine_with_ot(_raw_heatmaps(), crf={}, image_rgb=image)
    assert str(info.value) == CRF_MISSING
    assert CRF_MISSING == ("DenseCRF requested (refine.crf.enabled=true) but the optional extra 'crf' is not "
                           "installed: pip install 'cellseg[crf]'")
    with pytest.raises(ImportError, match="cellseg\\[crf\\]"):
        crf_refine(image, np.full((2, 12, 10), 0.5))
    # gamma = 0 skips the CRF (A3.6), so no error
    assert refine_with_ot(_raw_heatmaps(), crf={}, image_rgb=image, gamma=0).shape == (12, 10)


def test_crf_needs_the_image():
    with pytest.raises(ValueError, match="image_rgb"):
        refine_with_ot(_raw_heatmaps(), crf={})


def test_stage_zero_and_one_chain_recovers_the_nuclei(nuclei_label):
    image = he_image(nuclei_label, noise=12.0)
    instances = classical_ucis(image)
    feats = handcrafted_features(image)
    stats = RunningChannelStats()
    stats.update(feats)
    feats = normalise_features(feats, stats)
    fg_acc = PrototypeAccumulator(feats.shape[0])
    fg_acc.add(feats, instances > 0)
    heatmaps = cosine_heatmaps(feats, background_prototype(feats, instances), fg_acc.mean)
    mask = refine_with_ot(heatmaps)
    truth = nuclei_label > 0
    # the smoothed feature channels blur the rims, so S is a little dilated: sanity bounds only
    assert (mask & truth).sum() / truth.sum() > 0.95
    assert (mask & truth).sum() / (mask | truth).sum() > 0.6
