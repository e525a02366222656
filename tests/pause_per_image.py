"""Runs train.py with COIN's per-image scoring paused at its N-th call (the resume tests kill it there).

    python tests/pause_per_image.py CALL MARKER [train.py overrides ...]

At the CALL-th call of `cellseg.pipeline.coin.score_image_prompts` the run writes MARKER and waits to be killed,
so it dies inside a per-image stage, after the previous images' files were written."""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

from run_helpers import REPO_ROOT

import cellseg.pipeline.coin as coin_pipeline


def pause_at_call(call: int, marker: Path) -> None:
    score = coin_pipeline.score_image_prompts
    calls = 0

    def paused_score(prompter, image, instances):
        nonlocal calls
        calls += 1
        if calls == call:
            marker.write_text(str(call))
            time.sleep(600)
        return score(prompter, image, instances)

    coin_pipeline.score_image_prompts = paused_score


if __name__ == "__main__":
    pause_at_call(int(sys.argv[1]), Path(sys.argv[2]))
    sys.argv = [str(REPO_ROOT / "train.py"), *sys.argv[3:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
