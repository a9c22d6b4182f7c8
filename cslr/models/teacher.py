"""The CSLR teacher: I3D over RGB + pose encoder over landmarks -> fusion -> 2-layer BiLSTM -> CTC classes.

    rgb  (B, T, 3, H, W) -> I3D          -> (B, T', C_rgb)  -> aux classifier "rgb"
    pose (B, T, 543, 3)  -> PoseEncoder  -> (B, T', C_pose) -> aux classifier "pose"
    concat -> Linear + ReLU (fusion_dim) = "features" -> BiLSTM (packed) -> classifier -> "log_probs"

Both streams downsample time by exactly 4 with the same formula, T' = ceil(T / 4) (`output_length`).
All log-probabilities are `log_softmax` of fp32 logits, also under autocast. Blank is class 0.

Build one with `cslr.models.registry.build_teacher("teacher_small", num_classes=len(vocab))`.
Run the tests: `/work/venv/bin/pytest tests/test_models.py -q`
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import StreamsConfig
from .heads import BiLSTMHead, Classifier, length_mask
from .i3d import I3D
from .pose import DEFAULT_POSE_PARTS, PoseEncoder

MODALITIES = ("rgb", "pose", "rgb+pose")


@dataclass
class TeacherConfig(StreamsConfig):
    """Teacher architecture. Defaults: the full-width model (`teacher_base`).

    Attributes:
        num_classes: CTC classes including the blank (= len(Vocabulary)).
        modality: "rgb", "pose" or "rgb+pose".
        width_mult: I3D channel multiplier (1.0 = the 12.29 M-parameter backbone).
        pose_parts: landmark subsets for the pose encoder (keys of `cslr.models.pose.POSE_PARTS`).
        pose_hidden: width of the pose encoder.
        fusion_dim: size of the fused sequence fed to the BiLSTM.
        lstm_hidden: BiLSTM hidden size per direction (output 2 * lstm_hidden).
        lstm_layers: stacked BiLSTM layers.
        dropout: on stream features, between LSTM layers and before the classifiers.
        aux_heads: an auxiliary CTC classifier on each stream's features when there are two streams (as
            two-stream CSLR models do); the trainer weighs them with `model.aux_weight` (0: built without them).
    """

    MODALITIES = MODALITIES  # the stream sets this architecture takes (a class constant, not a field)

    num_classes: int = 0
    modality: str = "rgb+pose"
    width_mult: float = 1.0
    pose_parts: tuple[str, ...] = DEFAULT_POSE_PARTS
    pose_hidden: int = 256
    fusion_dim: int = 1024
    lstm_hidden: int = 512
    lstm_layers: int = 2
    dropout: float = 0.1
    aux_heads: bool = True

    def __post_init__(self):
        self.check_classes_and_streams()


class Teacher(nn.Module):
    """RGB and/or pose streams, fused, then a BiLSTM and a CTC classifier (see module docstring)."""

    def __init__(self, cfg: TeacherConfig):
        super().__init__()
        self.cfg = cfg
        encoders = {}
        if "rgb" in cfg.streams:
            encoders["rgb"] = I3D(cfg.width_mult, dropout=cfg.dropout)
        if "pose" in cfg.streams:
            encoders["pose"] = PoseEncoder(cfg.pose_parts, cfg.pose_hidden, dropout=cfg.dropout)
        self.encoders = nn.ModuleDict(encoders)
        # One auxiliary CTC head per stream when there are two (as two-stream CSLR models do).
        self.aux_heads = nn.ModuleDict(
            {name: Classifier(enc.out_channels, cfg.num_classes, cfg.dropout) for name, enc in encoders.items()}
            if cfg.aux_heads and len(encoders) > 1 else {}
        )
        in_dim = sum(enc.out_channels for enc in encoders.values())
        self.fusion = nn.Sequential(nn.Linear(in_dim, cfg.fusion_dim), nn.ReLU(inplace=True))
        self.temporal = BiLSTMHead(cfg.fusion_dim, cfg.lstm_hidden, cfg.lstm_layers, cfg.dropout)
        self.classifier = Classifier(self.temporal.out_dim, cfg.num_classes, cfg.dropout)

    def output_length(self, lengths: Tensor | int):
        """Exact number of output frames for `lengths` input frames: ceil(T / 4), the same for every stream."""
        return next(iter(self.encoders.values())).output_length(lengths)

    def forward(self, rgb: Tensor | None = None, pose: Tensor | None = None, lengths: Tensor | None = None) -> dict:
        """Input frames -> CTC log-probabilities.

        Args:
            rgb: (B, T, 3, H, W) uint8 or float in [0, 255]; required when the modality has "rgb".
            pose: (B, T, 543, 3) landmarks, NaN where missing; required when the modality has "pose".
            lengths: (B,) valid input frames per sample (default: all T).
        Returns:
            {"log_probs": (B, T', V) fp32, "lengths": (B,) int64, "aux": {stream: (B, T', V) fp32}
             (two-stream models only), "features": (B, T', fusion_dim) the fused sequence before the BiLSTM,
             zero at padded frames}.
        """
        inputs = {"rgb": rgb, "pose": pose}
        for name in self.encoders:
            if inputs[name] is None:
                raise ValueError(f"teacher with modality {self.cfg.modality!r} needs a {name!r} input")
        first = inputs[next(iter(self.encoders))]
        B, T = first.shape[:2]
        if any(inputs[n].shape[1] != T for n in self.encoders):
            raise ValueError(f"rgb and pose have different frame counts: {rgb.shape[1]} vs {pose.shape[1]}")
        # lengths None = every frame valid: no masks, no packing and no length arithmetic in the streams, which an
        # ONNX trace would bake in at the example's length (the graph then went wrong for T not divisible by 4)
        full = lengths is None
        if full:
            lengths = torch.full((B,), T, dtype=torch.long, device=first.device)
        lengths = lengths.to(device=next(self.parameters()).device, dtype=torch.long)
        if not full and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths must be in [1, {T}], got {lengths.tolist()}")

        streams = {name: encoder(inputs[name], None if full else lengths)[0]  # (B, T', C_name)
                   for name, encoder in self.encoders.items()}
        out_lengths = self.output_length(lengths)
        aux = {name: head(streams[name]) for name, head in self.aux_heads.items()}  # (B, T', V)
        features = self.fusion(torch.cat(list(streams.values()), dim=-1))  # (B, T', fusion_dim)
        if not full:
            features = features * length_mask(out_lengths, features.shape[1])[..., None].to(features.dtype)
        hidden = self.temporal(features, None if full else out_lengths)  # (B, T', 2 * lstm_hidden)
        return {"log_probs": self.classifier(hidden), "lengths": out_lengths, "aux": aux, "features": features}
