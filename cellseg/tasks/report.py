"""Comparative report of finished runs (`cellseg-report`, `make report`).

    cellseg-report logs/train [more folders ...] [--out report] [--reference supervised]

Finds every finished run under the folders (single runs, multirun jobs, sweep trials), groups them dataset ×
supervision × budget × method, prints the summary table and writes `<out>/index.html` (one page that opens
from disk), `report.md`, `results.csv`, figures and an overlay gallery (`cellseg/reporting`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cellseg.reporting.build import ReportOptions, build_report
from cellseg.reporting.tables import markdown_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cellseg-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="report folder (replaced); default report/")
    parser.add_argument("--reference", default="supervised",
                        help="method every group is tested against on its dataset (default supervised; 'none': no test)")
    parser.add_argument("--scatter", nargs=2, metavar=("GROUP_A", "GROUP_B"),
                        help='two groups for the per-image scatter, named "method · budget · dataset"')
    parser.add_argument("--gallery-images", type=int, default=3, help="shared test images in the gallery")
    parser.add_argument("--title", default="cellseg benchmark report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    options = ReportOptions(reference=None if args.reference == "none" else args.reference,
                            scatter=tuple(args.scatter) if args.scatter else None,
                            gallery_images=args.gallery_images, title=args.title)
    index, rows = build_report(args.folders, args.out, options)
    print(markdown_table(rows))
    print(f"report: {index.resolve()}")


if __name__ == "__main__":
    main()
