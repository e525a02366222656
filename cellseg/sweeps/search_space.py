"""A search space (`hparams_search.params`): config keys with a distribution each, as Optuna and W&B read them.

    method.module.optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    method.module.ema_alpha:    {type: float, low: 0.1, high: 0.5, step: 0.1}
    trainer.max_steps:          {type: int, low: 100, high: 400, step: 100}
    model:                      {type: categorical, choices: [unet, deeplabv3plus]}

One file feeds both engines: `suggest` draws a value in an Optuna trial, `to_wandb_parameters` writes the same
space as a W&B sweep's `parameters` and `from_wandb_parameters` reads it back (tested to round-trip).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

KINDS = ("float", "int", "categorical")


def space_of(params: DictConfig | Mapping) -> dict[str, dict]:
    """Plain, checked copy of `hparams_search.params`; a bad entry is named with what was expected."""
    space = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params)
    for name, spec in space.items():
        where = f"hparams_search.params.{name}"
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind not in KINDS:
            raise ValueError(f"{where}.type={kind!r}; expected one of {', '.join(KINDS)}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"{where}: a categorical parameter needs a non-empty `choices` list")
        elif not ("low" in spec and "high" in spec and spec["low"] < spec["high"]):
            raise ValueError(f"{where}: a {kind} parameter needs low < high (got {spec})")
        elif spec.get("log") and spec.get("step"):
            raise ValueError(f"{where}: `log` and `step` cannot be combined")
    return {name: _normalized(spec) for name, spec in space.items()}


def _normalized(spec: Mapping) -> dict:
    """Only the keys that matter (`log: false` and `step: null` dropped), so equal spaces compare equal."""
    if spec["type"] == "categorical":
        return {"type": "categorical", "choices": list(spec["choices"])}
    extra = {"log": True} if spec.get("log") else {"step": spec["step"]} if spec.get("step") else {}
    return {"type": spec["type"], "low": spec["low"], "high": spec["high"], **extra}


def suggest(trial: optuna.Trial, name: str, spec: Mapping):
    """The trial's value for one parameter."""
    kind = spec["type"]
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec["choices"]))
    suggest_number = trial.suggest_float if kind == "float" else trial.suggest_int
    return suggest_number(name, spec["low"], spec["high"], log=bool(spec.get("log", False)),
                          step=spec.get("step") or (None if kind == "float" else 1))


def as_override(name: str, value) -> str:
    """`key=value` in Hydra's grammar (strings quoted, so `a,b` or `x=y` stay one value)."""
    return f"{name}={json.dumps(value)}"


def to_wandb_parameters(space: Mapping) -> dict[str, dict]:
    """The W&B sweep `parameters` for a search space (distribution names from W&B's sweep configuration)."""
    parameters = {}
    for name, spec in space.items():
        kind, log, step = spec["type"], bool(spec.get("log")), spec.get("step")
        if kind == "categorical":
            parameters[name] = {"values": list(spec["choices"])}
        elif step:
            parameters[name] = {"distribution": "q_uniform", "min": spec["low"], "max": spec["high"], "q": step}
        elif log:
            distribution = "q_log_uniform_values" if kind == "int" else "log_uniform_values"
            parameters[name] = {"distribution": distribution, "min": spec["low"], "max": spec["high"],
                                **({"q": 1} if kind == "int" else {})}
        else:
            distribution = "int_uniform" if kind == "int" else "uniform"
            parameters[name] = {"distribution": distribution, "min": spec["low"], "max": spec["high"]}
    return parameters


def from_wandb_parameters(parameters: Mapping) -> dict[str, dict]:
    """The search space a W&B sweep's `parameters` describe (the inverse of `to_wandb_parameters`)."""
    space = {}
    for name, spec in parameters.items():
        if "values" in spec:
            space[name] = {"type": "categorical", "choices": list(spec["values"])}
            continue
        distribution, low, high = spec["distribution"], spec["min"], spec["max"]
        is_int = distribution in ("int_uniform", "q_log_uniform_values") or (
            distribution == "q_uniform" and all(isinstance(v, int) for v in (low, high, spec["q"])))
        entry = {"type": "int" if is_int else "float", "low": low, "high": high}
        if distribution in ("log_uniform_values", "q_log_uniform_values"):
            entry["log"] = True
        elif distribution == "q_uniform":
            entry["step"] = spec["q"]
        elif distribution not in ("uniform", "int_uniform"):
            raise ValueError(f"parameters.{name}.distribution={distribution!r} has no Optuna counterpart here")
        space[name] = entry
    return space
