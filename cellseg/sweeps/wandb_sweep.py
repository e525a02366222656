"""A W&B sweep configuration from a search space, for users who sweep with W&B agents instead of Optuna.

    python -m cellseg.sweeps.wandb_sweep hparams_search=s2l experiment=s2l_unet_monuseg --output sweep.yaml
    wandb sweep sweep.yaml && wandb agent <entity/project/sweep id>

The parameters, objective and direction are read from the same `hparams_search` config the Optuna driver uses,
so the two never disagree (`sweeps/wandb/` holds one generated file per search space; a test regenerates them).
Each W&B run is `python train.py <the overrides given here> logger=wandb <sampled key=value ...>`, so it obeys
the same rules as an Optuna trial (the objective check, test=false, held-out validation images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cellseg.pipeline.checks import check_objective
from cellseg.sweeps.search_space import space_of, to_wandb_parameters
from cellseg.tasks.compose import compose_config
from cellseg.utils.io import atomic_path

# One folder per W&B run (the agent sets WANDB_RUN_ID); train.py's own folder is keyed on experiment and seed only.
RUN_DIR = "hydra.run.dir=${paths.log_dir}/sweeps/${hparams_search.study_name}/wandb/${oc.env:WANDB_RUN_ID}"
# W&B's search methods by the Optuna sampler they stand in for.
WANDB_METHODS = {"TPESampler": "bayes", "GPSampler": "bayes", "RandomSampler": "random", "GridSampler": "grid"}


def sweep_configuration(overrides: list[str]) -> dict:
    cfg = compose_config("train", overrides, Path("unused"))
    search = cfg.get("hparams_search")
    if not search or "params" not in search:
        raise ValueError("choose a search space: hparams_search=<name> (configs/hparams_search/)")
    check_objective(cfg)
    sampler = str(search.sampler._target_).rsplit(".", 1)[-1]
    return {
        "program": "train.py",
        "name": str(search.study_name),
        "method": WANDB_METHODS.get(sampler, "bayes"),
        "metric": {"name": str(cfg.optimized_metric), "goal": str(search.direction)},
        "parameters": to_wandb_parameters(space_of(search.params)),
        "command": ["${env}", "${interpreter}", "${program}", *overrides, "logger=wandb", RUN_DIR,
                    "${args_no_hyphens}"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="+", help="train overrides, at least hparams_search=<name>")
    parser.add_argument("--output", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    text = yaml.safe_dump(sweep_configuration(args.overrides), sort_keys=False)
    if args.output is None:
        print(text, end="")
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
