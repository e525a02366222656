"""Write a report folder from finished runs: results.csv, report.md, figures, overlay gallery and index.html,
one self-contained page (inline CSS, figures as files beside it, opens from disk with no server)."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from cellseg.reporting import figures, gallery
from cellseg.reporting.records import RunRecord, load_runs
from cellseg.reporting.tables import Group, display_rows, group_runs, markdown_table, summary_rows, write_csv
from cellseg.utils.io import atomic_path

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
SIMULATED_NOTE = ("Weak labels are simulated from the ground-truth masks of the training images: scribbles are "
                  "skeletons of a fraction of the nuclei, image-level labels say whether a tile holds a nucleus; "
                  "annotation-free runs read no training label. Test scores use the full test masks.")


@dataclass
class ReportOptions:
    reference: str | None = "supervised"
    scatter: tuple[str, str] | None = None  # two group names "method · budget · dataset"; default: see below
    gallery_images: int = 3
    title: str = "cellseg benchmark report"


def scatter_pair(groups: list[Group], options: ReportOptions) -> tuple[Group, Group] | None:
    """The requested pair, else the reference against the best other group of the first dataset."""
    by_name = {g.name: g for g in groups}
    if options.scatter:
        missing = [n for n in options.scatter if n not in by_name]
        if missing:
            raise ValueError(f"--scatter {missing}: no such group; groups are {sorted(by_name)}")
        return by_name[options.scatter[0]], by_name[options.scatter[1]]
    reference = next((g for g in groups if g.first.method == options.reference), None)
    others = [g for g in groups if g is not reference and (reference is None or g.first.dataset == reference.first.dataset)]
    if reference is None or not others:
        return None
    return reference, max(others, key=lambda g: g.per_image().mean())


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def report_markdown(rows: list[dict], figure_files: list[str], runs: list[RunRecord], options: ReportOptions) -> str:
    lines = [f"# {options.title}", "", SIMULATED_NOTE, "", markdown_table(rows), ""]
    lines += [f"![{name}]({name})" for name in figure_files]
    lines += ["", "## Runs", ""]
    lines += [f"- `{r.path}`: {r.method}, {r.budget}, seed {r.seed}, git {r.git_sha or '?'}" for r in runs]
    return "\n".join(lines) + "\n"


def draw_figures(groups: list[Group], folder: Path, options: ReportOptions) -> list[str]:
    drawn = [figures.aji_by_annotation(groups, folder), figures.stage_gains(groups, folder),
             figures.aji_by_cpu_time(groups, folder)]
    pair = scatter_pair(groups, options)
    if pair is not None:
        drawn.append(figures.per_image_scatter(*pair, folder))
    return [name for name in drawn if name]


def render_page(context: dict) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    environment.globals["zip"] = zip
    return environment.get_template("index.html.j2").render(**context)


def build_report(roots: list[Path], out: Path, options: ReportOptions | None = None) -> tuple[Path, list[dict]]:
    """The report of every finished run under `roots`, written into `out` (replaced): (index.html, summary rows)."""
    options = options or ReportOptions()
    runs = load_runs(roots)
    groups = group_runs(runs)
    rows = summary_rows(groups, options.reference)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("report of %d runs in %d groups", len(runs), len(groups))
    write_csv(rows, staging / "results.csv")
    figure_files = draw_figures(groups, staging, options)
    write_text(staging / "report.md", report_markdown(rows, figure_files, runs, options))
    header, table = display_rows(rows)
    page = render_page({
        "title": options.title, "runs": [run_view(r) for r in runs], "rows": rows, "header": header,
        "table": table, "figures": figure_files, "reference": options.reference, "crop": gallery.CROP,
        "same_crops": gallery.same_crops(groups, staging, options.gallery_images),
        "best_worst": gallery.best_and_worst(groups, staging), "simulated_note": SIMULATED_NOTE,
        "made": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv), "machine": machine(),
        "shas": sorted({r.git_sha[:10] for r in runs if r.git_sha})})
    write_text(staging / "index.html", page)
    shutil.rmtree(out, ignore_errors=True)  # a finished report replaces the old one whole
    staging.rename(out)
    return out / "index.html", rows


def run_view(run: RunRecord) -> dict:
    return {"path": run.path, "method": run.method, "budget": run.budget, "seed": run.seed, "model": run.model,
            "cpu_minutes": run.cpu_minutes, "command": run.command,
            "config_url": (run.path / "config_resolved.yaml").resolve().as_uri()}


def machine() -> str:
    return f"{platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
