"""Portable checkpoints (`best_model.pth`): weights + plain metadata, saved atomically and loaded without
unpickling code (`torch.load(weights_only=True)`), and the model rebuilt from them by its registered name."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from cslr.datasets.vocab import Vocabulary

from .registry import CONFIGS, ModelConfig
from .student import Student
from .registry import build_model as _build


def save_portable(path: str | os.PathLike, state_dict: dict, extra: dict) -> None:
    """`best_model.pth`: weights + plain-typed metadata, loadable with `torch.load(..., weights_only=True)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"model": {k: v.detach().cpu() for k, v in state_dict.items()}, **extra}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def safe_load(path: str | os.PathLike, what: str = "checkpoint", kind: str = "cslr checkpoint"):
    """`torch.load(weights_only=True)` of a file a user hands in, with errors naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable {kind} ({e})") from e


def load_portable(path: str | os.PathLike) -> dict:
    """Load a `best_model.pth` safely (no arbitrary unpickling)."""
    ckpt = safe_load(path)
    for key in ("model", "config", "vocab", "model_name"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def build_model(cfg: ModelConfig, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The model of `cfg` + the plain metadata that rebuilds it from `best_model.pth`.

    Every architecture's config takes `modality`, `dropout` and `aux_heads`; `aux_weight` 0 builds no auxiliary
    heads at all (parameters without a gradient would stop DDP). `width_mult`, `hint_dim`, `hand_crop` and
    `backbone_pool` are passed only when set (the last three: students).
    """
    kwargs = {"modality": cfg.modality, "dropout": cfg.dropout, "aux_heads": cfg.aux_weight > 0}
    if cfg.width_mult:
        kwargs["width_mult"] = cfg.width_mult
    config_cls = CONFIGS.get(cfg.arch)
    fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else None
    if cfg.hint_dim or cfg.hint_level != ModelConfig.hint_level:
        if fields is not None and "hint_dim" not in fields:
            raise ValueError(f"--hint_dim {cfg.hint_dim} / --hint_level {cfg.hint_level}: model {cfg.arch!r} has no "
                             "hint regressor (students have)")
        kwargs.update(hint_dim=cfg.hint_dim, hint_level=cfg.hint_level)
    for name, lacks in (("hand_crop", "takes no hand patches (students do)"),
                        ("backbone_pool", "has no pooled backbone (students with hand patches have)")):
        value = getattr(cfg, name)
        if value != getattr(ModelConfig, name):  # passed only when set
            if fields is not None and name not in fields:
                raise ValueError(f"--{name} {value}: model {cfg.arch!r} {lacks}")
            kwargs[name] = value
    model = _build(cfg.arch, num_classes=num_classes, **kwargs)
    return model, {"model_name": cfg.arch, "model_kwargs": kwargs, "num_classes": num_classes}


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Vocabulary, dict]:
    """Rebuild a model from `best_model.pth` (safe load), in eval mode, with its vocabulary."""
    ck = load_portable(path)
    model = _build(ck["model_name"], num_classes=ck["num_classes"], **ck["model_kwargs"])
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing and all(k.startswith("aux_heads.") for k in missing) and getattr(model.cfg, "aux_heads", False):
        # A student saved before it had auxiliary heads: they only run in training, inference does not need them.
        model.aux_heads = torch.nn.ModuleDict()
        model.cfg.aux_heads, missing = False, []
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match model {ck['model_name']} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()
    return model, Vocabulary(ck["vocab"]), ck


def load_pretrained_backbone(model: Student, path: str | Path) -> int:
    """Load ImageNet weights of the torchvision classifier (a local state dict file) into the frame encoder.

    Accepts the full classification model's state dict (`features.*` and `classifier.*`; the classifier is
    ignored) or the `features` module's own. Never downloads. Returns the number of tensors loaded.
    """
    path = Path(path)
    if not isinstance(model, Student):
        raise ValueError(f"--pretrained {path}: {type(model).__name__} has no MobileNetV3 backbone to load "
                         "ImageNet weights into (only students take them)")
    state = safe_load(path, what="pretrained weights", kind="state dict")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a state dict of torchvision {model.cfg.backbone}")
    has_prefix = any(k.startswith("features.") for k in state)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} if has_prefix else state
    target = model.frames.features.state_dict()
    missing = sorted(set(target) - set(feats))
    shape_err = [k for k in target if k in feats and feats[k].shape != target[k].shape]
    if missing or shape_err:
        raise ValueError(f"{path}: does not fit {model.cfg.backbone} width {model.cfg.width_mult} "
                         f"(missing {missing[:3]}, shape mismatch {shape_err[:3]}); ImageNet weights need width_mult 1.0")
    model.frames.features.load_state_dict({k: feats[k] for k in target})
    return len(target)
