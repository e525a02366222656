"""S2L's pseudo-label oracle: pixel counts on a hand-made map, and a callback that reports without changing training."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from s2l_helpers import fit, make_module, sample_datamodule

from cellseg.callbacks.pseudo_label_oracle import PseudoLabelOracle
from cellseg.metrics.pseudo_labels import pixel_pseudo_label_counts, summarise_pixel_quality


def test_pixel_counts_and_rates_of_a_hand_made_map():
    foreground = np.array([[0.9, 0.1, 0.5], [0.85, 0.05, np.nan]], dtype=np.float32)
    gt = np.array([[1, 0, 1], [0, 0, 2]])
    counts = pixel_pseudo_label_counts(foreground, gt, tau=0.8)
    assert counts == {"pixels": 6, "gt_fg": 3, "pseudo_fg": 2, "pseudo_bg": 2, "pseudo_fg_correct": 1,
                      "pseudo_bg_correct": 2}
    rates = summarise_pixel_quality([counts, counts])  # pooling two equal images leaves the rates unchanged
    assert rates == pytest.approx({"fg_share": 2 / 6, "bg_share": 2 / 6, "undecided_share": 2 / 6,
                                   "fg_precision": 0.5, "fg_recall": 1 / 3, "bg_precision": 1.0, "bg_recall": 2 / 3})


def test_rates_without_foreground_pseudo_labels_are_nan_not_zero():
    counts = pixel_pseudo_label_counts(np.zeros((2, 2)), np.eye(2), tau=0.8)
    rates = summarise_pixel_quality([counts])
    assert math.isnan(rates["fg_precision"]) and rates["fg_recall"] == 0.0 and rates["bg_precision"] == 0.5


def test_shape_mismatch_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="pseudo-label map is"):
        pixel_pseudo_label_counts(np.zeros((2, 2)), np.zeros((3, 2)), tau=0.8)
    with pytest.raises(ValueError, match="no image"):
        summarise_pixel_quality([])


def test_the_oracle_scores_every_update_and_leaves_training_unchanged(tmp_path):
    plain = make_module(warmup_epochs=2, ema_period=1)
    fit(plain, sample_datamodule(tmp_path / "a" / "cache"), max_epochs=3)
    observed = make_module(warmup_epochs=2, ema_period=1)
    oracle = PseudoLabelOracle(tmp_path / "run")
    trainer = fit(observed, sample_datamodule(tmp_path / "b" / "cache"), max_epochs=3, callbacks=[oracle])

    for key, value in plain.state_dict().items():
        torch.testing.assert_close(observed.state_dict()[key], value, rtol=0, atol=0)
    for image_id, ema in plain.ema.maps.items():
        torch.testing.assert_close(observed.ema[image_id], ema, rtol=0, atol=0)

    with open(tmp_path / "run" / "pseudo_label_oracle.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["ema_epoch"]), int(r["update"])) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    labels = trainer.datamodule.whole_image_dataset("train", with_labels=True)
    expected = PseudoLabelOracle.score(observed.ema, observed.tau, dict(zip(labels.ids, labels.label_paths, strict=True)))
    for key, value in expected.items():
        written = float(rows[-1][key])
        assert (math.isnan(value) and math.isnan(written)) or written == pytest.approx(value, abs=1e-6), key


def test_the_oracle_does_nothing_for_the_pce_baseline(tmp_path):
    module = make_module(warmup_epochs=1, ema_period=1, pce_only=True)
    fit(module, sample_datamodule(tmp_path / "cache"), max_epochs=2, callbacks=[PseudoLabelOracle(tmp_path / "run")])
    assert not (tmp_path / "run" / "pseudo_label_oracle.csv").exists()


def test_the_method_and_its_trainer_never_load_the_oracle_metrics():
    code = ("import sys, cellseg.methods.s2l.module, cellseg.pipeline.trainer, cellseg.tasks.train; "
            "print('cellseg.metrics.pseudo_labels' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
