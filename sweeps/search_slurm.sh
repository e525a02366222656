#!/usr/bin/env bash
# N Optuna search workers, one SLURM job each, on one study (journal file under logs/sweeps/<study>). Put
# partition, time and GPUs in configs/local/default.yaml (configs/local/example.yaml), then e.g.:
#   bash sweeps/search_slurm.sh 8 hparams_search=s2l experiment=s2l_unet_monuseg
# Run it again with the same arguments to add workers to the same study; a requeued worker finishes its trial.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=$1
shift
.venv/bin/python -m cellseg.sweeps.optuna_search -m hydra/launcher=submitit_slurm trainer=gpu \
    "hparams_search.worker=$(seq -s, 0 $((workers - 1)))" "$@"
