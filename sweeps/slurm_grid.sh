#!/usr/bin/env bash
# A grid on SLURM via hydra-submitit-launcher. Put partition, time and GPUs in configs/local/default.yaml
# (see configs/local/example.yaml), then e.g.:
#   bash sweeps/slurm_grid.sh experiment=supervised_unet_monuseg model=unet,deeplabv3plus seed=1,2,3
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python train.py -m hydra/launcher=submitit_slurm trainer=gpu "$@"
