"""`python -m cellseg.tasks.weak_labels data=... supervision=... [verify=true]`: build or check weak-label caches.

Training builds the cache on its own; this task lets a user prepare it once before a sweep (every trial then reads
the same files) and check that a cache still matches its generator (`verify=true`: exit status 1 and the ids of
the differing files otherwise).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from cellseg.data.weak.cache import CachedWeakLabels
from cellseg.tasks.common import run_task
from cellseg.utils.project import CONFIG_DIR, set_project_root_env

log = logging.getLogger(__name__)


class WeakLabelMismatch(RuntimeError):
    """Cached weak labels differ from what their generator writes now."""


def prepare_weak_labels(cfg: DictConfig) -> dict:
    weak_labels = hydra.utils.instantiate(cfg.supervision.generator)
    datamodule = hydra.utils.instantiate(cfg.data, weak_labels=weak_labels)
    layout, ids = datamodule.layout("train"), datamodule.ids("train")
    if not cfg.get("verify", False):
        paths = weak_labels.prepare(layout, ids)
        folders = sorted({str(p.parent) for p in paths.values()})
        log.info(f"{len(paths)} {weak_labels.kind} targets for {len(ids)} training images in {folders or '-'}")
        return {"weak_labels/images": float(len(paths))}
    if not isinstance(weak_labels, CachedWeakLabels):
        raise ValueError(f"supervision={cfg.supervision.kind} has no generated cache to verify "
                         f"({type(weak_labels).__name__}); verify=true applies to generated labels such as scribbles")
    differing = weak_labels.verify(layout, ids)
    if differing:
        raise WeakLabelMismatch(f"{len(differing)} of {len(ids)} cached {weak_labels.kind} labels are missing or "
                                f"differ from a fresh generation (run without verify=true to rebuild): "
                                f"{differing[:20]}{' ...' if len(differing) > 20 else ''}")
    log.info(f"all {len(ids)} cached {weak_labels.kind} labels match a fresh generation")
    return {"weak_labels/verified": float(len(ids))}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="weak_labels")
def main(cfg: DictConfig) -> None:
    run_task(cfg, prepare_weak_labels)


set_project_root_env()

if __name__ == "__main__":
    main()
