"""Benchmark suites: every regime on one dataset over n seeds, then one comparative report.

    python -m cellseg.sweeps.suite sweeps/suites/monuseg_all_regimes.yaml                  # CPU-sized, here
    python -m cellseg.sweeps.suite sweeps/suites/monuseg_all_regimes_gpu.yaml --seeds 1 2 3 -- \
        hydra/launcher=submitit_slurm hydra.launcher.partition=gpu                          # paper settings, SLURM
    python -m cellseg.sweeps.suite SUITE --dry-run                                          # the commands only

A suite file names its runs (a list of train.py overrides each), its seeds and the report's reference method.
Each run is one `train.py -m ... seed=a,b,c` multirun under `<log dir>/<task>/multiruns/`, in a sweep folder named
after the suite and the run (`CELLSEG_SWEEP_ID`), so a suite started again skips the seeds that completed and
resumes the others from their `last.ckpt`. Overrides after `--` go to every run (a launcher, a data root, ...).
A failed run is reported at the end and the suite goes on with the others; the report shows what completed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from cellseg.tasks import report
from cellseg.utils.project import RUN_INFO, SWEEP_ID_ENV

log = logging.getLogger(__name__)
TRAIN = [sys.executable, "-m", "cellseg.tasks.train"]
SUITE_KEYS = {"description", "seeds", "reference", "runs"}


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    seeds: tuple[int, ...]
    reference: str | None
    runs: dict[str, tuple[str, ...]]  # run name -> train.py overrides


def load_suite(path: Path) -> Suite:
    """Read a suite file; one ValueError naming the file and the key when something is missing or malformed."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"suite {path}: cannot read it ({err})") from err
    if not isinstance(spec, dict) or not spec.get("runs"):
        raise ValueError(f"suite {path}: expected a mapping with `runs` (name: [train.py overrides])")
    unknown = set(spec) - SUITE_KEYS
    if unknown:
        raise ValueError(f"suite {path}: unknown keys {sorted(unknown)}; expected {sorted(SUITE_KEYS)}")
    runs = {}
    for name, overrides in spec["runs"].items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ValueError(f"suite {path}: runs.{name} must be a list of key=value overrides, got {overrides!r}")
        runs[str(name)] = tuple(overrides)
    seeds = spec.get("seeds", [1, 2, 3])
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"suite {path}: seeds must be a list of integers, got {seeds!r}")
    return Suite(name=Path(path).stem, description=str(spec.get("description", "")).strip(), seeds=tuple(seeds),
                 reference=spec.get("reference"), runs=runs)


def sweep_id(suite: Suite, run: str) -> str:
    return f"{suite.name}-{run}"


def completed_seeds(log_dir: Path, sweep: str) -> set[int]:
    """Seeds whose job of this sweep folder finished (run_info.json status `completed`)."""
    done = set()
    for info_path in log_dir.glob(f"*/multiruns/*/{sweep}/*/{RUN_INFO}"):  # <task>/multiruns/<experiment>/...
        info = json.loads(info_path.read_text())
        if info.get("status") == "completed" and info.get("seed") is not None:
            done.add(int(info["seed"]))
    return done


def run_command(overrides: tuple[str, ...], seeds: list[int], log_dir: Path, extra: list[str]) -> list[str]:
    return [*TRAIN, "-m", *overrides, f"seed={','.join(map(str, seeds))}", f"paths.log_dir={log_dir}", *extra]


def run_suite(suite: Suite, log_dir: Path, extra: list[str], dry_run: bool = False) -> list[str]:
    """Train every run's missing seeds; returns the names of the runs that failed."""
    failed = []
    for position, (run, overrides) in enumerate(suite.runs.items(), start=1):
        sweep = sweep_id(suite, run)
        seeds = [s for s in suite.seeds if s not in completed_seeds(log_dir, sweep)]
        if not seeds:
            log.info("[%d/%d] %s: every seed completed, skipped", position, len(suite.runs), run)
            continue
        command = run_command(overrides, seeds, log_dir, extra)
        log.info("[%d/%d] %s: seeds %s\n  %s=%s %s", position, len(suite.runs), run, seeds, SWEEP_ID_ENV, sweep,
                 " ".join(command))
        if dry_run:
            continue
        if subprocess.run(command, env={**os.environ, SWEEP_ID_ENV: sweep}).returncode != 0:
            log.error("%s failed (the suite goes on)", run)
            failed.append(run)
    return failed


def write_report(suite: Suite, log_dir: Path, out: Path) -> None:
    title = f"{suite.name}: {suite.description}" if suite.description else suite.name
    report.main([str(log_dir), "--out", str(out), "--reference", suite.reference or "none",
                 "--title", title])


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", type=Path, help="suite file (sweeps/suites/*.yaml)")
    parser.add_argument("--log-dir", type=Path, help="where the runs go (default logs/suites/<suite name>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the suite's seeds")
    parser.add_argument("--report", type=Path, help="report folder (default <log dir>/report)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, extra = parse_args(argv)
    suite = load_suite(args.suite)
    if args.seeds:
        suite = Suite(suite.name, suite.description, tuple(args.seeds), suite.reference, suite.runs)
    log_dir = (args.log_dir or Path("logs") / "suites" / suite.name).resolve()
    failed = run_suite(suite, log_dir, extra, dry_run=args.dry_run)
    if args.dry_run:
        return
    write_report(suite, log_dir, (args.report or log_dir / "report").resolve())
    if failed:
        raise SystemExit(f"suite {suite.name}: runs failed: {', '.join(failed)} (see their run folders)")


if __name__ == "__main__":
    main()
