"""Named model builders: `build_teacher("teacher_small", num_classes=len(vocab), dropout=0.2)`.

Every builder is `fn(num_classes, **overrides) -> nn.Module`, registered in MODELS with `@register`;
`build_model(name, ...)` builds any of them, `build_teacher(preset, ...)` only teachers.

| preset          | use                                            | I3D width | pose | fusion | BiLSTM     |
| --------------- | ---------------------------------------------- | --------- | ---- | ------ | ---------- |
| `teacher_tiny`  | tests: milliseconds at 32x32                   | 0.125     | 16   | 32     | 2 x 16     |
| `teacher_small` | CPU default: 2 cores, 32x32 crops, batch 8     | 0.25      | 128  | 256    | 2 x 128    |
| `teacher_base`  | PHOENIX on GPUs at 224x224 (VAC-sized head)    | 1.0       | 256  | 1024   | 2 x 512    |

| preset          | use                                  | MobileNetV3 (width) | temporal conv | BiLSTM  |
| --------------- | ------------------------------------ | ------------------- | ------------- | ------- |
| `student_tiny`  | tests: milliseconds at 32x32         | small (0.25)        | 32            | 2 x 16  |
| `student_small` | CPU default; ImageNet weights fit    | small (1.0)         | 128           | 2 x 64  |
| `student_base`  | PHOENIX on GPUs at 224x224           | large (1.0)         | 512           | 2 x 256 |

List them: `python -c "from cslr.models.registry import list_models; print(list_models())"`
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .student import Student, StudentConfig
from .teacher import Teacher, TeacherConfig

@dataclass
class ModelConfig:
    arch: str = "teacher_small"     # a registered builder (MODELS)
    modality: str = "rgb+pose"      # rgb | pose | rgb+pose
    dropout: float = 0.3
    aux_weight: float = 0.5         # weight of each auxiliary head's CTC (and KD) loss: teacher streams, student streams
    pretrained: str = ""            # optional local weights file (never downloaded)
    width_mult: float = 0.0         # backbone channel multiplier (I3D, MobileNetV3); 0: the preset's
    hint_dim: int = 0               # students: FitNets hint regressor width = the teacher's pose stream (--hint_weight)
    hint_level: str = "sequence"    # students: hints on the temporal features (sequence) or each frame's (frames)
    hand_crop: int = 0              # students: hand patches of this side (pixels), located from the frames (0: none)
    backbone_pool: int = 1          # students with hand patches: the backbone reads the frame pooled by this factor


MODELS: dict[str, Callable[..., nn.Module]] = {}
CONFIGS: dict[str, type] = {}  # builder name -> the config class of the model it builds


def register(config_cls: type):
    """Add a builder `fn(num_classes, **overrides) -> nn.Module` to MODELS under its function name, with the
    config class (TeacherConfig, StudentConfig) its model takes: callers decide by the config, never the name."""
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[fn.__name__] = fn
        CONFIGS[fn.__name__] = config_cls
        return fn

    return add


def _build(model_cls, cfg_cls, preset: dict, num_classes: int, overrides: dict) -> nn.Module:
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown {cfg_cls.__name__} fields {unknown}; known: {sorted(fields)}")
    return model_cls(cfg_cls(num_classes=num_classes, **{**preset, **overrides}))


def _teacher(preset: dict, num_classes: int, overrides: dict) -> Teacher:
    return _build(Teacher, TeacherConfig, preset, num_classes, overrides)


def _student(preset: dict, num_classes: int, overrides: dict) -> Student:
    return _build(Student, StudentConfig, preset, num_classes, overrides)


@register(TeacherConfig)
def teacher_tiny(num_classes: int, **overrides) -> Teacher:
    """A few hundred thousand parameters, for tests."""
    return _teacher(dict(width_mult=0.125, pose_hidden=16, fusion_dim=32, lstm_hidden=16), num_classes, overrides)


@register(TeacherConfig)
def teacher_small(num_classes: int, **overrides) -> Teacher:
    """The CPU default (2 cores, 32x32 crops of 64x64 frames, ~70 frames, batch 8)."""
    return _teacher(dict(width_mult=0.25, pose_hidden=128, fusion_dim=256, lstm_hidden=128), num_classes, overrides)


@register(TeacherConfig)
def teacher_base(num_classes: int, **overrides) -> Teacher:
    """Full-width I3D (12.29 M) + pose, BiLSTM 2 x 512 as VAC: PHOENIX on GPUs at 224x224."""
    return _teacher(dict(width_mult=1.0, pose_hidden=256, fusion_dim=1024, lstm_hidden=512), num_classes, overrides)


@register(StudentConfig)
def student_tiny(num_classes: int, **overrides) -> Student:
    """MobileNetV3-small at width 0.25 with a tiny head, for tests."""
    return _student(dict(backbone="mobilenet_v3_small", width_mult=0.25, temporal_hidden=32, lstm_hidden=16),
                    num_classes, overrides)


@register(StudentConfig)
def student_small(num_classes: int, **overrides) -> Student:
    """The CPU default: MobileNetV3-small (ImageNet weights fit), temporal conv 128, BiLSTM 2 x 64."""
    return _student(dict(backbone="mobilenet_v3_small", width_mult=1.0, temporal_hidden=128, lstm_hidden=64),
                    num_classes, overrides)


@register(StudentConfig)
def student_base(num_classes: int, **overrides) -> Student:
    """MobileNetV3-large, temporal conv 512, BiLSTM 2 x 256: PHOENIX on GPUs at 224x224."""
    return _student(dict(backbone="mobilenet_v3_large", width_mult=1.0, temporal_hidden=512, lstm_hidden=256),
                    num_classes, overrides)


def build_teacher(preset: str, num_classes: int, **overrides) -> Teacher:
    """Build a teacher preset; `overrides` replace TeacherConfig fields (e.g. modality="rgb").

    Args:
        preset: a teacher name from MODELS ("teacher_tiny", "teacher_small", "teacher_base").
        num_classes: CTC classes including the blank (len(Vocabulary)).
    """
    teachers = [m for m in list_models() if CONFIGS[m] is TeacherConfig]
    if preset not in teachers:
        raise ValueError(f"unknown teacher preset {preset!r}; available: {teachers}")
    return MODELS[preset](num_classes, **overrides)


def build_model(name: str, num_classes: int, **overrides) -> nn.Module:
    """Build any registered model (teacher or student) by name; `overrides` go to its config.

    Args:
        name: a key of MODELS (see `list_models()`).
        num_classes: CTC classes including the blank (len(Vocabulary)).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return MODELS[name](num_classes, **overrides)


def list_models() -> list[str]:
    """Names of all registered builders, sorted."""
    return sorted(MODELS)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
