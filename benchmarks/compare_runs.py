"""Are two runs the same? Compares two run folders file by file and exits 1 when anything differs.

    python benchmarks/compare_runs.py RUN_A RUN_B

Checkpoints are compared by their weights (`state_dict`, tensor by tensor), `metrics.json` without the folders it
names, every other output byte for byte. Records that hold times, hosts or paths are skipped: Hydra's `.hydra/`,
logs, resolved configs (`*.yaml`), `run_info.json`, the stage markers `done.json`/`stage.json` (their profiles
are timings), CSV logger folders and submitit job folders. Used to check that the same command with the same seed reproduces a
benchmark run exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SKIPPED_NAMES = frozenset({"done.json", "stage.json", "run_info.json"})
SKIPPED_SUFFIXES = (".log", ".yaml")  # logs, and resolved configs (they name the run's folders)
SKIPPED_FOLDERS = frozenset({".hydra", "csv", "submitit"})  # submitit: job logs and pickles


def compared_files(root: Path) -> list[Path]:
    """The outputs of a run folder that two identical runs must share, relative to `root`."""
    return sorted(
        path.relative_to(root) for path in root.rglob("*")
        if path.is_file() and path.name not in SKIPPED_NAMES and path.suffix not in SKIPPED_SUFFIXES
        and not SKIPPED_FOLDERS.intersection(path.relative_to(root).parts)
    )


def same_checkpoint(a: Path, b: Path) -> bool:
    first, second = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (a, b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def same_metrics(a: Path, b: Path) -> bool:
    def without_folders(path: Path) -> dict:
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("_dir")}
    return without_folders(a) == without_folders(b)


def same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".ckpt":
        return same_checkpoint(a, b)
    if a.name == "metrics.json":
        return same_metrics(a, b)
    return a.read_bytes() == b.read_bytes()


def compare_runs(run_a: Path, run_b: Path) -> tuple[int, list[str]]:
    """(number of identical files, descriptions of the differences) of two run folders."""
    files_a, files_b = compared_files(run_a), compared_files(run_b)
    differences = [f"only in {run_a}: {p}" for p in sorted(set(files_a) - set(files_b))]
    differences += [f"only in {run_b}: {p}" for p in sorted(set(files_b) - set(files_a))]
    identical = 0
    for relative in sorted(set(files_a) & set(files_b)):
        if same_file(run_a / relative, run_b / relative):
            identical += 1
        else:
            differences.append(f"differs: {relative}")
    return identical, differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    for folder in (args.run_a, args.run_b):
        if not folder.is_dir():
            parser.error(f"{folder} is not a run folder")
    identical, differences = compare_runs(args.run_a, args.run_b)
    print(f"{identical} files identical, {len(differences)} differences")
    if differences:
        print("\n".join(differences))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
