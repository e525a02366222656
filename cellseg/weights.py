"""Weights policy: random init by default, local checkpoints with optional sha256, opt-in `auto` downloads.

`load(module, spec)` is the one path every model uses (docs/framework.md#weights-policy):
- `spec=None` keeps the random initialisation;
- a local `.pth|.pt|.bin` (torch.load, weights_only) or `.safetensors` file is unwrapped (nested `state_dict` /
  `model` / `module` keys, a leading `module.` prefix), re-prefixed, stripped of known extras (MAE decoder, mask
  token, a classifier `fc.` the target lacks), ViT position embeddings are resampled to the target token grid, and
  the result is loaded non-strictly with missing / unexpected keys logged and returned in a `LoadReport`;
- `spec="auto"` downloads an official checkpoint into `weights_dir` (refused when `CELLSEG_OFFLINE=1`).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cellseg.utils.hashing import sha256_file

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
WRAPPER_KEYS = ("state_dict", "model", "module")
# Checkpoint parts that are never part of the models we build; dropped only when the target lacks them.
KNOWN_EXTRA_PREFIXES = ("decoder_", "decoder.", "mask_token", "fc.")


def _torchvision_url(enum_name: str, member: str) -> str:
    import torchvision.models as tvm  # metadata only, nothing is downloaded here
    import torchvision.models.detection as tvd

    weights_enum = getattr(tvm, enum_name, None) or getattr(tvd, enum_name)
    return getattr(weights_enum, member).url


# name -> URL (or a zero-argument function giving it). Used only by `spec="auto"`.
AUTO_SOURCES: dict[str, str | Callable[[], str]] = {
    "sam_vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "sam_vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "sam_vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_base_patch16_224.mae": "https://huggingface.co/timm/vit_base_patch16_224.mae/resolve/main/model.safetensors",
    "fit3d_mae_base": "https://huggingface.co/yuanwenyue/FiT3D/resolve/main/mae_base_finetuned.pth",
    "resnet18": lambda: _torchvision_url("ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet34": lambda: _torchvision_url("ResNet34_Weights", "IMAGENET1K_V1"),
    "resnet50": lambda: _torchvision_url("ResNet50_Weights", "IMAGENET1K_V2"),
    "resnet101": lambda: _torchvision_url("ResNet101_Weights", "IMAGENET1K_V2"),
    "maskrcnn_resnet50_fpn": lambda: _torchvision_url("MaskRCNN_ResNet50_FPN_Weights", "COCO_V1"),
}


@dataclass
class LoadReport:
    """What `load` did; `source=None` means nothing was loaded (random initialisation)."""

    source: str | None = None
    sha256: str | None = None
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.loaded)


def is_offline() -> bool:
    return os.environ.get("CELLSEG_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def default_weights_dir() -> Path:
    return Path(os.environ.get("CELLSEG_WEIGHTS_DIR", "weights"))


# ----------------------------------------------------------------------------------------------- resolving a spec
def resolve(
    spec: str | os.PathLike | None,
    sha256: str | None = None,
    *,
    auto_source: str | None = None,
    weights_dir: str | os.PathLike | None = None,
    config_key: str = "weights",
) -> tuple[Path | None, str | None]:
    """Spec -> (local file, its sha256) after existence and digest checks; (None, None) for `spec=None`."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "null", "none")):
        return None, None
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        path = download_auto(auto_source, weights_dir, config_key=config_key)
        recorded = path.with_name(path.name + ".sha256")
        sha256 = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    else:
        path = Path(os.fspath(spec)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} (set `{config_key}` to an existing .pth/.pt/.safetensors file, "
            f"or `{config_key}: null` for random initialisation)"
        )
    actual = sha256_file(path)
    if sha256 and actual.lower() != str(sha256).strip().lower():
        raise ValueError(f"sha256 mismatch for weights file {path}: expected {sha256}, got {actual}")
    return path, actual


def download_auto(
    name: str | None, weights_dir: str | os.PathLike | None = None, *, config_key: str = "weights"
) -> Path:
    """Fetch an official checkpoint once into `weights_dir` and record its sha256 next to it."""
    if is_offline():
        raise RuntimeError(
            f"weights: auto needs network; CELLSEG_OFFLINE=1 is set ({config_key}=auto for '{name}'). "
            f"Download the file yourself and set {config_key}=/path/to/file, or {config_key}=null for random init."
        )
    if name not in AUTO_SOURCES:
        raise ValueError(f"{config_key}: auto has no official source for '{name}'; known: {sorted(AUTO_SOURCES)}")
    url = AUTO_SOURCES[name]
    url = url() if callable(url) else url
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / url.rsplit("/", 1)[-1]
    if name == "fit3d_mae_base" or target.name == "model.safetensors":
        target = folder / f"{name}{target.suffix}"  # generic file names would collide
    if not target.is_file():
        log.info("weights: downloading %s -> %s", url, target)
        partial = target.with_name(target.name + ".part")
        torch.hub.download_url_to_file(url, str(partial), progress=True)
        partial.replace(target)
        target.with_name(target.name + ".sha256").write_text(sha256_file(target) + "\n")
    return target


# ----------------------------------------------------------------------------------------------- reading a file
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from `state_dict` / `model` / `module` containers."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    elif suffix in TORCH_SUFFIXES:
        try:
            # MAE training checkpoints also pickle their argparse arguments; allow only that class.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"weights file {path} holds objects that torch.load(weights_only=True) refuses; "
                f"re-save only its state_dict ({error})"
            ) from error
    else:
        raise ValueError(
            f"weights file {path}: unsupported suffix '{path.suffix}', expected one of "
            f"{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}"
        )
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | os.PathLike = "<memory>") -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights file {path}: expected a state dict (mapping of tensors), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"weights file {path}: no tensors found (keys: {list(obj)[:10]})")
    if all(k.startswith("module.") for k in tensors):  # DataParallel / DDP wrapper
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ----------------------------------------------------------------------------------------------- key surgery
def apply_prefix_map(state: dict[str, torch.Tensor], prefix_map: Mapping[str, str] | None) -> dict:
    """Rename keys by their longest matching old prefix (an empty old prefix adds a prefix to every key)."""
    if not prefix_map:
        return dict(state)
    olds = sorted(prefix_map, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        old = next((p for p in olds if key.startswith(p)), None)
        renamed[key if old is None else prefix_map[old] + key[len(old):]] = value
    return renamed


def select_scope(state: dict[str, torch.Tensor], scope: str | None) -> dict[str, torch.Tensor]:
    """A full-model checkpoint given for a scoped load keeps only the scope's keys, without the scope prefix."""
    if not scope:
        return state
    head = scope + "."
    if any(k.startswith(head) for k in state):
        return {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
    return state


def drop_extras(state: dict, target_keys: set[str], drop_prefixes=()) -> tuple[dict, list[str]]:
    """Drop user-listed prefixes always, known extras (MAE decoder, mask token, fc) when the target lacks them."""
    kept, dropped = {}, []
    for key, value in state.items():
        user_drop = any(key.startswith(p) for p in drop_prefixes)
        known_extra = key not in target_keys and any(key.startswith(p) for p in KNOWN_EXTRA_PREFIXES)
        if user_drop or known_extra:
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def resize_pos_embed(state: dict, module: nn.Module, key: str = "pos_embed") -> list[str]:
    """Resample a ViT absolute position embedding to the target's token grid (timm), in place."""
    target = module.state_dict().get(key)
    if key not in state or target is None or state[key].shape == target.shape:
        return []
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(module, "no_embed_class", False) else int(getattr(module, "num_prefix_tokens", 1))
    grid = getattr(getattr(module, "patch_embed", None), "grid_size", None)
    if grid is None:
        side = int(round((target.shape[1] - prefix) ** 0.5))
        grid = (side, side)
    state[key] = resample_abs_pos_embed(state[key], new_size=list(grid), num_prefix_tokens=prefix)
    return [key]


# ----------------------------------------------------------------------------------------------- loading
def load(
    module: nn.Module,
    spec: str | os.PathLike | None,
    sha256: str | None = None,
    strict: bool = False,
    prefix_map: Mapping[str, str] | None = None,
    drop_prefixes: tuple[str, ...] | list[str] = (),
    scope: str | None = None,
    *,
    auto_source: str | None = None,
    weights_dir: str | os.PathLike | None = None,
    config_key: str = "weights",
) -> LoadReport:
    """Load `spec` into `module` (or its submodule `scope`); see the module docstring for the rules."""
    path, digest = resolve(spec, sha256, auto_source=auto_source, weights_dir=weights_dir, config_key=config_key)
    if path is None:
        return LoadReport()
    target = module.get_submodule(scope) if scope else module
    target_state = target.state_dict()

    state = select_scope(apply_prefix_map(read_state_dict(path), prefix_map), scope)
    state, dropped = drop_extras(state, set(target_state), tuple(drop_prefixes))
    resized = resize_pos_embed(state, target)
    _check_shapes(state, target_state, path)

    missing = sorted(set(target_state) - set(state))
    unexpected = sorted(set(state) - set(target_state))
    report = LoadReport(str(path), digest, sorted(set(state) & set(target_state)), missing, unexpected, dropped, resized)
    if strict and (missing or unexpected):
        raise ValueError(
            f"weights file {path} does not match {type(target).__name__} (strict): "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    target.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    _log_report(report, scope)
    return report


def _check_shapes(state: dict, target_state: dict, path: Path) -> None:
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(target_state[k].shape)}"
        for k, v in state.items()
        if k in target_state and v.shape != target_state[k].shape
    ]
    if wrong:
        raise ValueError(
            f"weights file {path}: {len(wrong)} tensors have the wrong shape ({'; '.join(wrong[:5])}); "
            "check the architecture or drop those keys (drop_prefixes)"
        )


def _log_report(report: LoadReport, scope: str | None) -> None:
    where = f" into '{scope}'" if scope else ""
    log.info("weights: loaded %d tensors from %s%s (sha256 %s)", len(report.loaded), report.source, where, report.sha256)
    if report.missing:
        log.warning("weights: %d missing keys (kept random): %s", len(report.missing), report.missing[:20])
    if report.unexpected:
        log.warning("weights: %d unexpected keys (ignored): %s", len(report.unexpected), report.unexpected[:20])
    if report.dropped:
        log.info("weights: dropped %d known extra keys: %s", len(report.dropped), report.dropped[:20])
    if report.resized:
        log.info("weights: resampled %s to the model's token grid", report.resized)
