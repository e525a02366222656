"""The report's figures (matplotlib, written as PNG beside the page). Each returns its file name, or None when
the runs hold nothing to draw (no multi-stage method, no CPU times...)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cellseg.reporting.stats import mean_sd  # noqa: E402
from cellseg.reporting.tables import Group  # noqa: E402
from cellseg.utils.io import atomic_path  # noqa: E402


def save(figure, folder: Path, name: str) -> str:
    with atomic_path(folder / name) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return name


def aji_stats(group: Group) -> tuple[float, float]:
    mean, sd = mean_sd([run.means.get("aji") for run in group.runs])
    return mean, 0.0 if np.isnan(sd) else sd


def aji_by_annotation(groups: list[Group], folder: Path) -> str | None:
    """Mean AJI (± sd over seeds) against the annotation budget, cheapest first, one panel per dataset."""
    datasets = sorted({g.first.dataset for g in groups})
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        members = [g for g in groups if g.first.dataset == dataset]
        budgets = sorted({(g.first.annotation_rank, g.first.budget) for g in members})
        position = {budget: i for i, (_, budget) in enumerate(budgets)}
        for method in sorted({g.first.method for g in members}):
            points = sorted((position[g.first.budget], *aji_stats(g)) for g in members if g.first.method == method)
            x, y, err = zip(*points, strict=True)
            axis.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
        axis.set_xticks(range(len(budgets)), [b for _, b in budgets], rotation=20)
        axis.set(title=dataset, xlabel="annotation (cheapest → dearest)", ylabel="test AJI (per-image mean)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save(figure, folder, "aji_by_annotation.png")


def stage_gains(groups: list[Group], folder: Path) -> str | None:
    """Test AJI after each stage / loop of the multi-stage methods (mean over seeds)."""
    staged = [g for g in groups if any(run.stages for run in g.runs)]
    if not staged:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for group in staged:
        numbers = sorted({n for run in group.runs for n in run.stages})
        means = [mean_sd([run.stages.get(n, {}).get("aji") for run in group.runs])[0] for n in numbers]
        axis.plot(numbers, means, marker="o", label=group.name)
    axis.set(xlabel="stage (round / loop)", ylabel="test AJI", title="per-stage test AJI")
    axis.set_xticks(sorted({n for g in staged for run in g.runs for n in run.stages}))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save(figure, folder, "stage_gains.png")


def aji_by_cpu_time(groups: list[Group], folder: Path) -> str | None:
    """Mean AJI against mean CPU minutes per run (the cost of compute, beside the cost of annotation)."""
    points = [(mean_sd([r.cpu_minutes for r in g.runs])[0], *aji_stats(g), g.name) for g in groups]
    points = [p for p in points if not np.isnan(p[0])]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for minutes, mean, sd, name in points:
        axis.errorbar([minutes], [mean], yerr=[sd], marker="o", capsize=3, label=name)
    axis.set(xlabel="CPU minutes per run", ylabel="test AJI", title="accuracy against compute")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return save(figure, folder, "aji_by_cpu_time.png")


def per_image_scatter(first: Group, second: Group, folder: Path) -> str | None:
    """Per-image AJI of two groups on the images both scored; points above the diagonal favour `second`."""
    a, b = first.per_image().align(second.per_image(), join="inner")
    if a.empty:
        return None
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(a, b, s=18)
    axis.plot([0, 1], [0, 1], color="grey", linewidth=1)
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"AJI {first.name}", ylabel=f"AJI {second.name}",
             title="per test image")
    axis.grid(alpha=0.3)
    return save(figure, folder, "per_image_scatter.png")
