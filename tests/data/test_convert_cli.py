"""The CLI: `python -m cellseg.data.convert` and the `data/prepare.py` wrapper (--out and --dst alike)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cellseg.data.convert import CONVERTERS, convert, main
from cellseg.utils.io import read_label

REPO_ROOT = Path(__file__).resolve().parents[2]


def _tnbc(root):
    for folder in ("Slide_01", "GT_01"):
        (root / folder).mkdir(parents=True)
    gt = np.zeros((5, 5), np.uint8)
    gt[1:3, 1:3] = 255
    for image_id in ("01_1", "01_2"):
        Image.fromarray(np.full((5, 5, 3), 90, np.uint8)).save(root / "Slide_01" / f"{image_id}.png")
        Image.fromarray(gt).save(root / "GT_01" / f"{image_id}.png")


def test_every_dataset_of_the_spec_has_a_converter():
    assert set(CONVERTERS) == {"monuseg", "dsb2018", "tnbc", "cryonuseg", "cpm17", "pannuke", "consep", "monusac",
                               "ccrcc", "brca", "coin"}
    with pytest.raises(ValueError, match="unknown dataset 'kumar'"):
        convert("kumar", "a", "b")


def test_main_converts_and_reports_errors(tmp_path, capsys):
    _tnbc(tmp_path / "native")
    assert main(["TNBC", "--src", str(tmp_path / "native"), "--dst", str(tmp_path / "out"), "--no-count-check"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "TNBC")
    with pytest.raises(SystemExit) as exit_info:  # exists already, no --overwrite
        main(["tnbc", "--src", str(tmp_path / "native"), "--dst", str(tmp_path / "out"), "--no-count-check"])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option of another dataset
        main(["tnbc", "--src", "x", "--dst", "y", "--annotator", "annotator2"])
    assert "--annotator applies to cryonuseg only" in capsys.readouterr().err


def _run_script(monkeypatch, argv, *, module=False) -> int:
    """Run data/prepare.py or `python -m cellseg.data.convert` in-process (a subprocess would re-import torch)."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as exit_info:
        if module:
            runpy.run_module("cellseg.data.convert", run_name="__main__")
        else:
            runpy.run_path(str(REPO_ROOT / "data" / "prepare.py"), run_name="__main__")
    return exit_info.value.code


def test_prepare_wrapper_accepts_out_and_module_accepts_dst(tmp_path, monkeypatch, capsys):
    _tnbc(tmp_path / "native")
    argv = ["tnbc", "--src", str(tmp_path / "native"), "--no-count-check"]
    assert _run_script(monkeypatch, [*argv, "--out", str(tmp_path / "out")]) == 0
    index = pd.read_csv(tmp_path / "out" / "TNBC" / "test" / "index.csv", dtype={"id": str})
    assert index["id"].tolist() == ["01_1"] and index["nuclei"].tolist() == [1]
    assert read_label(tmp_path / "out/TNBC/train/labels/01_2.png").max() == 1
    assert _run_script(monkeypatch, [*argv, "--dst", str(tmp_path / "out2")], module=True) == 0
    assert (tmp_path / "out2" / "TNBC" / "MANIFEST.sha256").read_text() == (
        tmp_path / "out" / "TNBC" / "MANIFEST.sha256").read_text()  # deterministic
    capsys.readouterr()
    assert _run_script(monkeypatch, ["tnbc", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
