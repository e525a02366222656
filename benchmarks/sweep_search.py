"""A small real Optuna search on this machine: parallel workers on one journal study, then the study's table.

    python benchmarks/sweep_search.py --data-root ../shared/data --output /tmp/sweep_bench
    python benchmarks/sweep_search.py --output /tmp/sweep_bench --skip-run     # the table of a finished search

Runs the supervised baseline (small U-Net) on a slice of MoNuSeg train (`--images`, of which `--holdout` are the
validation images the objective val/aji is measured on), `--trials` trials over `--workers` worker processes
started by Hydra's submitit launcher on this machine (`hydra/launcher=submitit_local`), one CPU thread each,
with median pruning. Prints the trial table, the best trial, the trials per worker, duplicates (none expected),
and wall and CPU minutes of the whole search.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = "supervised_monuseg_slice"


def search_command(args) -> list[str]:
    workers = ",".join(str(w) for w in range(args.workers))
    return [sys.executable, "-m", "cellseg.sweeps.optuna_search", "-m", "hydra/launcher=submitit_local",
            "hydra.launcher.cpus_per_task=1", f"hparams_search.worker={workers}",
            "experiment=supervised_unet_sample", "hparams_search=supervised", "data=monuseg",
            f"paths.data_dir={args.data_root}", f"paths.log_dir={args.output}", f"paths.cache_dir={args.output / 'cache'}",
            f"data.max_images={args.images}", f"data.val_holdout={args.holdout}", "data.batch_size=4",
            f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps // 4}",
            "trainer.enable_progress_bar=false", f"hparams_search.n_trials={args.trials}",
            f"hparams_search.study_name={STUDY}", "hparams_search.sampler.n_startup_trials=4",
            "hparams_search.pruner.n_startup_trials=3", *args.overrides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--holdout", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip-run", action="store_true", help="only print the table of an earlier search")
    parser.add_argument("overrides", nargs="*", help="more overrides for every trial")
    args = parser.parse_args()
    args.output = args.output.resolve()
    folder = args.output / "sweeps" / STUDY
    measured = folder / "bench.json"
    if not args.skip_run:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CELLSEG_OFFLINE": "1", "WANDB_MODE": "disabled"}
        start = time.time()
        subprocess.run(search_command(args), cwd=ROOT, env=env, check=True)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        measured.write_text(json.dumps({"wall_min": (time.time() - start) / 60,
                                        "cpu_min": (usage.ru_utime + usage.ru_stime) / 60,
                                        "command": search_command(args)}, indent=1))
    subprocess.run([sys.executable, "-m", "cellseg.sweeps.report", str(folder)], cwd=ROOT, check=True)
    rows = json.loads(subprocess.run([sys.executable, "-m", "cellseg.sweeps.report", str(folder), "--json"],
                                     cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    params = [tuple(sorted((k, v) for k, v in row.items() if k.startswith("method."))) for row in rows]
    per_worker = {}
    for row in rows:
        per_worker[row["worker"]] = per_worker.get(row["worker"], 0) + 1
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    print(f"trials: {len(rows)} ({states}); per worker: {per_worker}; "
          f"distinct parameter sets: {len(set(params))}; trial numbers distinct: "
          f"{len({r['trial'] for r in rows}) == len(rows)}")
    if measured.is_file():
        figures = json.loads(measured.read_text())
        print(f"search: {figures['wall_min']:.1f} min wall, {figures['cpu_min']:.1f} CPU-min "
              f"({args.workers} workers on this machine)")


if __name__ == "__main__":
    main()
