"""Configuration checks every run and pipeline makes before any work: a ConfigError names the keys involved."""

from __future__ import annotations

from omegaconf import DictConfig

# Keys a checkpoint or early-stopping callback may never monitor: test data, and GT metrics of weak regimes.
FORBIDDEN_MONITOR_PREFIXES = ("oracle/", "test/")
# validation keys computed from the regime's own weak labels, never from validation ground truth
WEAK_LABEL_MONITORS = ("val/scribble_loss",)

class ConfigError(ValueError):
    """A configuration that cannot run; raised before any work is done."""


def check_supervision(cfg: DictConfig) -> None:
    """Stop early when the method does not support the chosen supervision."""
    method, supervision = cfg.method.name, cfg.get("supervision")
    if supervision is None:
        raise ConfigError(f"method={method} needs a supervision; choose one of {list(cfg.method.supervision_kinds)}")
    if supervision.kind not in cfg.method.supervision_kinds:
        raise ConfigError(
            f"method={method} does not support supervision={supervision.kind}: "
            f"it supports {list(cfg.method.supervision_kinds)}"
        )


def check_monitors(cfg: DictConfig) -> None:
    """No callback may select on test data or, in a weak regime, on validation ground truth."""
    weak = cfg.supervision.kind != "full"
    for name, node in (cfg.get("callbacks") or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if not monitor:
            continue
        uses_val_gt = monitor.startswith("val/") and monitor not in WEAK_LABEL_MONITORS
        if monitor.startswith(FORBIDDEN_MONITOR_PREFIXES) or (weak and uses_val_gt):
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor}: selection may not use test data or, under "
                f"supervision={cfg.supervision.kind}, validation ground truth"
            )
