"""The comparative report: its numbers agree with the runs' per-image files, its page references only files that
exist, and runs that differ only in their annotation budget keep apart."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from report_fixtures import IMAGES, make_runs
from scipy.stats import wilcoxon

from cellseg.reporting.build import build_report
from cellseg.reporting.tables import parse_text_table
from cellseg.tasks.report import main
from cellseg.utils.project import CONFIG_DIR, set_project_root_env


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    groups = make_runs(root)
    index, _ = build_report([root / "logs"], root / "report")
    return root, groups, index


def seed_means(folders: list[Path], metric: str = "aji") -> list[float]:
    return [pd.read_csv(f / "per_image.csv")[metric].mean() for f in folders]


def per_image_mean_over_seeds(folders: list[Path]) -> pd.Series:
    return pd.concat([pd.read_csv(f / "per_image.csv", index_col="id")["aji"] for f in folders], axis=1).mean(axis=1)


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self._in_results = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table":
            self._in_results = attrs.get("id") == "results-table"
        self._in_cell = self._in_results and tag == "td"

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_results = False
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)


def test_results_csv_holds_mean_sd_and_tests_of_the_runs_per_image_files(report):
    root, groups, index = report
    results = pd.read_csv(index.parent / "results.csv")
    assert len(results) == 3 and list(results["budget"]) == ["scribble0.1", "scribble0.3", "full"]  # cheapest first
    reference = per_image_mean_over_seeds(groups["supervised · full · synth"])
    for _, row in results.iterrows():
        folders = groups[f"{row['method']} · {row['budget']} · {row['dataset']}"]
        means = seed_means(folders)
        assert row["n_seeds"] == 2 and row["n_images"] == len(IMAGES)
        assert row["aji_mean"] == pytest.approx(np.mean(means), abs=1e-12)
        assert row["aji_sd"] == pytest.approx(np.std(means, ddof=1), abs=1e-12)
        assert row["pq_mean"] == pytest.approx(np.mean(seed_means(folders, "pq")), abs=1e-12)
        assert row["aji_ci_low"] <= row["aji_mean"] <= row["aji_ci_high"]
        if row["method"] == "supervised":
            assert bool(row["is_reference"]) and math.isnan(row["wilcoxon_p"])
        else:
            values = per_image_mean_over_seeds(folders)
            expected = wilcoxon(values.loc[reference.index], reference).pvalue
            assert row["wilcoxon_p"] == pytest.approx(expected) and row["n_pairs"] == len(IMAGES)
    assert results.set_index("budget").loc["scribble0.3", "aji_mean"] > results.set_index("budget").loc[
        "scribble0.1", "aji_mean"]  # fewer dropped nuclei score higher: the fixture is not flat


def test_markdown_and_html_tables_show_the_same_figures(report):
    _, groups, index = report
    markdown = (index.parent / "report.md").read_text()
    parser = PageParser()
    parser.feed(index.read_text())
    for name, folders in groups.items():
        means = seed_means(folders)
        shown = f"{np.mean(means):.3f} ± {np.std(means, ddof=1):.3f}"
        assert shown in markdown, name
        assert shown in parser.cells, name


def test_every_figure_and_overlay_on_the_page_exists(report):
    _, _, index = report
    parser = PageParser()
    parser.feed(index.read_text())
    assert {"aji_by_annotation.png", "aji_by_cpu_time.png", "per_image_scatter.png"} <= set(parser.images)
    assert sum(src.startswith("gallery/same/") for src in parser.images) == 3 * 3  # 3 shared images × 3 groups
    assert sum(src.startswith("gallery/best/") for src in parser.images) == 3
    for source in parser.images:
        assert not re.match(r"^(https?:|/)", source), source  # relative: the page opens from disk
        assert (index.parent / source).is_file(), source


def test_the_command_line_prints_the_table_and_the_page(report, capsys):
    root, _, _ = report
    main([str(root / "logs"), "--out", str(root / "again"), "--reference", "none"])
    printed = capsys.readouterr().out
    header, *rows = parse_text_table(printed)
    s2l = [dict(zip(header, row, strict=True)) for row in rows if row[header.index("method")] == "s2l"]
    assert s2l and all(row["seeds"] == "2" and row["images"] == "5" for row in s2l)
    assert f"report: {(root / 'again' / 'index.html').resolve()}" in printed
    assert not (root / "again.partial").exists()


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_report([tmp_path / "nowhere"], tmp_path / "report")


def test_runs_that_differ_only_in_their_budget_get_different_folders(tmp_path):
    def run_dir(ratio: float) -> str:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True,
                          overrides=["experiment=s2l_unet_sample", f"supervision.ratio={ratio}",
                                     f"paths.log_dir={tmp_path}"])
        HydraConfig.instance().set_config(cfg)
        return str(cfg.hydra.run.dir)

    set_project_root_env()
    assert run_dir(0.1) != run_dir(0.3)
    assert run_dir(0.1).endswith("s2l_unet_sample/scribble0.1/seed42")
