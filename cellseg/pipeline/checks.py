"""Configuration checks every run and pipeline makes before any work: a ConfigError names the keys involved."""

from __future__ import annotations

from omegaconf import DictConfig

# Keys a checkpoint or early-stopping callback may never monitor: test data, and GT metrics of weak regimes.
FORBIDDEN_MONITOR_PREFIXES = ("oracle/", "test/")
# validation keys computed from the regime's own weak labels, never from validation ground truth
WEAK_LABEL_MONITORS = ("val/scribble_loss", "val/tile_accuracy")
# criteria computed without any label (a method's self-consistency), allowed in every regime
LABEL_FREE_PREFIX = "label_free/"

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


def uses_forbidden_labels(metric: str, supervision_kind: str) -> bool:
    """Test data, oracle/ metrics, or (in a weak regime) validation ground truth."""
    uses_val_gt = metric.startswith("val/") and metric not in WEAK_LABEL_MONITORS
    return metric.startswith(FORBIDDEN_MONITOR_PREFIXES) or (supervision_kind != "full" and uses_val_gt)


def check_monitors(cfg: DictConfig) -> None:
    """No callback may select on test data or, in a weak regime, on validation ground truth."""
    for name, node in (cfg.get("callbacks") or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if monitor and uses_forbidden_labels(monitor, cfg.supervision.kind):
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor}: selection may not use test data or, under "
                f"supervision={cfg.supervision.kind}, validation ground truth"
            )


def check_objective(cfg: DictConfig) -> None:
    """A sweep objective (`optimized_metric`) obeys the selection rule: never test data, never oracle/ metrics,
    and in a weak regime only what the regime's own labels (or no labels) give."""
    name = cfg.get("optimized_metric")
    if not name:
        raise ConfigError("a sweep needs optimized_metric (e.g. val/aji, val/scribble_loss, "
                          "label_free/prompt_agreement)")
    if uses_forbidden_labels(name, cfg.supervision.kind):
        raise ConfigError(
            f"optimized_metric={name}: the sweep rule forbids test-split and oracle/ metrics as objectives, and "
            f"under supervision={cfg.supervision.kind} validation ground truth (allowed: "
            f"{', '.join(WEAK_LABEL_MONITORS)}, {LABEL_FREE_PREFIX}*)")
