"""Runs grouped dataset × supervision × budget × method, one summary row per group, written as CSV and Markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cellseg.reporting.records import RunRecord
from cellseg.reporting.stats import bootstrap_interval, mean_sd, paired_wilcoxon, per_image_means
from cellseg.utils.io import atomic_path

METRICS = ("aji", "aji_plus", "pq", "dq", "sq", "dice", "f1_obj")
METRIC_LABELS = {"aji": "AJI", "aji_plus": "AJI+", "pq": "PQ", "dq": "DQ", "sq": "SQ", "dice": "Dice", "f1_obj": "F1"}


@dataclass
class Group:
    runs: list[RunRecord]

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def name(self) -> str:
        return f"{self.first.method} · {self.first.budget} · {self.first.dataset}"

    @property
    def seeds(self) -> list:
        return [run.seed for run in self.runs]

    def per_image(self, metric: str = "aji") -> pd.Series:
        return per_image_means([run.per_image for run in self.runs], metric)


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Groups ordered by dataset, then annotation cost (cheapest first), then method; runs by seed."""
    keyed: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        keyed.setdefault(run.group, []).append(run)
    groups = [Group(sorted(members, key=lambda r: (r.seed is None, r.seed))) for members in keyed.values()]
    return sorted(groups, key=lambda g: (g.first.dataset, g.first.annotation_rank, g.first.method))


def reference_group(groups: list[Group], group: Group, method: str | None) -> Group | None:
    """The reference of `group`: the group of `method` on the same dataset (the dearest budget if several)."""
    if method is None:
        return None
    candidates = [g for g in groups if g.first.dataset == group.first.dataset and g.first.method == method]
    return max(candidates, key=lambda g: g.first.annotation_rank) if candidates else None


def summary_row(group: Group, reference: Group | None) -> dict:
    first = group.first
    row = {"dataset": first.dataset, "supervision": first.kind, "budget": first.budget, "method": first.method,
           "model": first.model, "n_seeds": len(group.runs), "seeds": " ".join(map(str, group.seeds)),
           "n_images": len(group.per_image())}
    for metric in METRICS:
        row[f"{metric}_mean"], row[f"{metric}_sd"] = mean_sd([run.means.get(metric) for run in group.runs])
    row["aji_ci_low"], row["aji_ci_high"] = bootstrap_interval(group.per_image())
    row["is_reference"] = reference is group
    row["reference"] = reference.name if reference is not None and reference is not group else None
    row["wilcoxon_p"], row["n_pairs"] = (paired_wilcoxon(group.per_image(), reference.per_image())
                                         if row["reference"] else (math.nan, 0))
    row["annotation"] = annotation_summary(first.annotation)
    row.update({f"annotation_{key}": value for key, value in (first.annotation or {}).items()
                if isinstance(value, int) and key not in ("images", "labelled_images")})
    row["cpu_minutes"] = mean_sd([run.cpu_minutes for run in group.runs])[0]
    row["wall_minutes"] = mean_sd([run.wall_minutes for run in group.runs])[0]
    return row


def annotation_summary(used: dict | None) -> str:
    """The annotation a run trained on, in the unit a lab pays for (its first seed's: scribbles are seeded)."""
    if not used:
        return "–"
    if "instances" in used:
        return f"{used['instances']} instances"
    if "scribble_pixels" in used:
        return f"{used['scribble_pixels'] / max(used['pixels'], 1):.1%} px scribbled"
    if "tiles" in used:
        return f"{used['tiles']} tiles ({used['positive_tiles']} positive)"
    return "none"


def summary_rows(groups: list[Group], reference_method: str | None) -> list[dict]:
    return [summary_row(g, reference_group(groups, g, reference_method)) for g in groups]


def write_csv(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def mean_pm_sd(row: dict, metric: str) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    return fmt(mean) if math.isnan(sd) else f"{fmt(mean)} ± {fmt(sd)}"


def display_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human-readable table (Markdown and HTML show the same cells)."""
    header = ["dataset", "supervision", "budget", "annotation used", "method", "seeds", "images",
              *(METRIC_LABELS[m] for m in METRICS), "AJI 95 % CI", "p vs reference", "CPU min"]
    cells = [[r["dataset"], r["supervision"], r["budget"], r["annotation"], r["method"], str(r["n_seeds"]), str(r["n_images"]),
              *(mean_pm_sd(r, m) for m in METRICS), f"{fmt(r['aji_ci_low'])}–{fmt(r['aji_ci_high'])}",
              "reference" if r["is_reference"] else fmt(r["wilcoxon_p"], 4), fmt(r["cpu_minutes"], 1)]
             for r in rows]
    return header, cells


def markdown_table(rows: list[dict]) -> str:
    return text_table(*display_rows(rows))


def text_table(header: list[str], cells: list[list[str]]) -> str:
    """The project's one table format: a Markdown table with padded columns (text first column left-aligned,
    figures right-aligned), as the report, `cellseg-report` and every benchmark script print it."""
    widths = [max(len(str(line[i])) for line in [header, *cells]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        padded = [str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in cells)])


def parse_text_table(text: str) -> list[list[str]]:
    """The cells of a `text_table` (header first, the rule left out): what a test or a script reads back."""
    rows = [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [row for row in rows if not all(set(cell) <= set("-:") and cell for cell in row)]
