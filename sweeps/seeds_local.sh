#!/usr/bin/env bash
# Three seeds of one experiment, one after the other: bash sweeps/seeds_local.sh experiment=supervised_unet_monuseg
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python train.py -m seed=1,2,3 "$@"
