"""Compare runs: `python -m cellseg.tasks.report RUN_DIR [RUN_DIR ...]` prints test AJI / PQ / Dice of each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("aji", "pq", "dice", "miou_bin")


def run_row(run_dir: Path) -> dict:
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} is missing: did the run finish its test evaluation?")
    summary = json.loads(metrics_file.read_text())
    means = summary["per_image_mean"]
    return {"run": run_dir.parent.name if run_dir.name.startswith("seed") else run_dir.name,
            "images": summary.get("n_images"), **{c: means.get(c) for c in COLUMNS}}


def format_rows(rows: list[dict]) -> str:
    width = max(len("run"), *(len(r["run"]) for r in rows))
    header = f"{'run':<{width}}  {'images':>6}  " + "  ".join(f"{c.upper():>8}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        values = "  ".join(f"{row[c]:>8.4f}" if row[c] is not None else f"{'n/a':>8}" for c in COLUMNS)
        lines.append(f"{row['run']:<{width}}  {row['images']!s:>6}  {values}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding metrics.json")
    args = parser.parse_args(argv)
    print(format_rows([run_row(path) for path in args.runs]))


if __name__ == "__main__":
    main()
