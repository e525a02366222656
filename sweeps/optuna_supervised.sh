#!/usr/bin/env bash
# Optuna search (20 trials, resumable: re-run to continue): bash sweeps/optuna_supervised.sh [overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m cellseg.sweeps.optuna_search hparams_search=supervised experiment=supervised_unet_monuseg "$@"
