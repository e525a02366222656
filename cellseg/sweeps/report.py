"""The trial table of a study, its best trial, and that trial exported as an `experiment=` file.

    python -m cellseg.sweeps.report logs/sweeps/<study>                      # journal storage (the default)
    python -m cellseg.sweeps.report logs/sweeps/<study> --export configs/experiment/<name>.yaml
    python -m cellseg.sweeps.report --storage postgresql://... --study <study>

The exported file is the base experiment of the search, the group choices and values the workers were given,
and the best trial's sampled values; the search's own settings (`hparams_search=`, which hold validation images
out and switch the test split off) and machine paths are left out, so `python train.py experiment=<name>` trains
the best configuration on the whole training split and evaluates it on the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
import pandas as pd
import yaml
from omegaconf import OmegaConf

from cellseg.reporting.tables import text_table
from cellseg.sweeps.study import BASE_OVERRIDES_ATTR, JOURNAL_NAME, OBJECTIVE_ATTR, journal_storage
from cellseg.utils.io import atomic_path

# Overrides that describe the search or the machine, not the configuration found.
NOT_EXPORTED = ("hparams_search", "debug", "paths.", "hydra.", "hydra/", "ckpt_path", "overwrite")


def load_study(folder: Path | None, storage: str | None, study_name: str | None) -> optuna.Study:
    if storage is None:
        if folder is None or not (folder / JOURNAL_NAME).is_file():
            raise FileNotFoundError(f"{folder}: no {JOURNAL_NAME} here (give a study folder, or --storage URL)")
        storage = journal_storage(folder)
    names = optuna.get_all_study_names(storage)
    name = study_name or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise ValueError(f"study {study_name!r} is not in the storage; it holds {names} (choose with --study)")
    return optuna.load_study(study_name=name, storage=storage)


def trial_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        rows.append({"trial": trial.number, "state": trial.state.name, "value": trial.value,
                     "minutes": None if seconds is None else round(seconds / 60, 2),
                     "worker": trial.user_attrs.get("worker"), **trial.params})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def format_trials(table: pd.DataFrame) -> str:
    """The trial table in the project's table format; values and parameters to 4 significant digits."""
    if table.empty:
        return "(no trial yet)"
    rows = table.reset_index()
    cells = [["" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
             for row in rows.itertuples(index=False)]
    return text_table([str(c) for c in rows.columns], cells)


def exported_experiment(study: optuna.Study) -> str:
    """An experiment file (YAML text) of the best trial."""
    best, base = study.best_trial, list(study.user_attrs.get(BASE_OVERRIDES_ATTR, []))
    defaults, values = [], {}
    for override in base:
        key, _, value = override.lstrip("+").partition("=")
        if key.startswith(NOT_EXPORTED) or key in best.params:
            continue
        if key == "experiment":
            defaults.insert(0, value)
        elif "." not in key:
            defaults.append({f"override /{key}": value})
        else:
            values[key] = yaml.safe_load(value)
    values.update(best.params)
    body = OmegaConf.create({})
    for key, value in values.items():
        OmegaConf.update(body, key, value, force_add=True)
    header = (f"# @package _global_\n# Best trial {best.number} of study {study.study_name}: "
              f"{study.user_attrs.get(OBJECTIVE_ATTR, 'objective')} = {best.value}\n"
              f"# exported by `python -m cellseg.sweeps.report`; values found by the search: "
              f"{', '.join(best.params)}\n")
    text = yaml.safe_dump({"defaults": [*defaults, "_self_"]}, sort_keys=False)
    return header + text + OmegaConf.to_yaml(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="the study folder (<log_dir>/sweeps/<study>)")
    parser.add_argument("--storage", help="an RDB URL instead of the folder's journal file")
    parser.add_argument("--study", help="the study name (needed when the storage holds several)")
    parser.add_argument("--export", type=Path, help="write the best trial as an experiment file here")
    parser.add_argument("--json", action="store_true", help="print the table as JSON records")
    args = parser.parse_args(argv)
    study = load_study(args.folder, args.storage, args.study)
    table = trial_table(study)
    if args.json:
        print(table.reset_index().to_json(orient="records", indent=1))
        return
    print(f"study {study.study_name} ({study.direction.name.lower()} "
          f"{study.user_attrs.get(OBJECTIVE_ATTR, 'the objective')}):\n{format_trials(table)}")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        print("no complete trial yet")
        return
    print(f"best: trial {study.best_trial.number}, value {study.best_value:.4f}, "
          f"params {json.dumps(study.best_params)}")
    if args.export:
        args.export.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.export) as tmp:
            Path(tmp).write_text(exported_experiment(study))
        print(f"wrote {args.export}: python train.py experiment={args.export.stem}")


if __name__ == "__main__":
    main()
