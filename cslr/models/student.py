"""The CSLR student: MobileNetV3 per frame -> temporal conv K5-P2-K5-P2 -> BiLSTM (or conv only) -> CTC classes.

    rgb  (B, T, 3, S, S) uint8 -> ImageNet normalisation -> MobileNetV3 features on the valid frames
         -> global average pool -> (B, T, C) -> TemporalConv K5-P2-K5-P2 -> (B, T', hidden)
    pose (B, T, 543, 3) (optional) -> PoseEncoder -> (B, T', pose_hidden), concatenated   = "features"
    -> BiLSTM (packed; head="lstm") or one more temporal conv (head="conv", no recurrence: streamable)
    -> classifier -> "log_probs" (B, T', V) fp32
    auxiliary CTC classifiers on each stream's (B, T', C) sequence -> "aux" {"rgb", "pose"} (training mode only)
    hand patches (hand_crop > 0, `cslr.models.hands`): both hands located from the backbone's stride-8 features,
    cut at full resolution and encoded (the backbone may read the frame pooled: backbone_pool); their features and
    centres join each frame's -> "hand_xy" (B, T, 2, 2), "hand_shape" (B, T, 2, 42) (training mode only)
    hint regressor (hint_dim > 0): the rgb stream's (B, T', hidden) -> (B, T', hint_dim) "hint" (hint_level
    "sequence"), or the frame features (B, T, C) -> (B, T, hint_dim) "hint_frames" ("frames"), regressed onto the
    teacher's pose-stream features (FitNets; `cslr.trainer.kd.hint_loss`, training mode only)

Same interface as the teacher (`cslr.models.teacher`): the same `forward(rgb, pose, lengths)` dict and the same
exact `output_length`, T' = ceil(T / 4), so frame-level distillation aligns student and teacher frame by frame.
The backbone is torchvision's, built with no download; ImageNet weights come from a local file
(`cslr.models.checkpoint.load_pretrained_backbone`, width_mult 1.0 only).

Build one with `cslr.models.registry.build_model("student_small", num_classes=len(vocab))`.
Run the tests: `/work/venv/bin/pytest tests/test_student.py -q`
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from .base import StreamsConfig
from .hands import HAND_SHAPE_DIM, HandLocator, HandPatches, stride8_split
from .heads import BiLSTMHead, Classifier, TemporalConv, length_mask
from .i3d import ImageNetNormalize
from .pose import DEFAULT_POSE_PARTS, PoseEncoder

BACKBONES = ("mobilenet_v3_small", "mobilenet_v3_large")
HEADS = ("lstm", "conv")
HINT_LEVELS = ("sequence", "frames", "hands")
MODALITIES = ("rgb", "rgb+pose")


@dataclass
class StudentConfig(StreamsConfig):
    """Student architecture (the registry presets set the sizes).

    Attributes:
        num_classes: CTC classes including the blank (= len(Vocabulary)).
        modality: "rgb" or "rgb+pose" (the student is an RGB model; pose is an optional extra stream).
        backbone: "mobilenet_v3_small" or "mobilenet_v3_large" (torchvision).
        width_mult: MobileNetV3 channel multiplier (ImageNet weights exist for 1.0 only).
        temporal_hidden: channels of the K5-P2-K5-P2 temporal convs.
        head: "lstm" (BiLSTM over the whole sequence) or "conv" (one more K3 conv: no recurrence, for streaming).
        lstm_hidden: BiLSTM hidden size per direction.
        lstm_layers: stacked BiLSTM layers.
        pose_parts, pose_hidden: the pose stream (modality "rgb+pose" only).
        aux_heads: an auxiliary CTC classifier on each stream's temporal features ("rgb": the conv output of the
            frame features, "pose": the pose encoder's), as VAC's conv-head and the teacher's stream heads. The
            sequence head can fit the CTC loss with little help from the per-frame features; a loss straight on
            them trains the backbone and the pose encoder to be discriminative per frame, which the 32x32 CPU
            student needs to leave the __ON__/__OFF__ plateau. They run in training mode only (inference and
            the ONNX graph carry no cost); the trainer weighs them with `model.aux_weight`.
        dropout: on the backbone features, between LSTM layers and before the classifier.
        bn_momentum: the backbone's BatchNorm running-statistics momentum. torchvision builds MobileNetV3 with
            0.01 (TensorFlow's 0.99 decay, made for ImageNet's 600 epochs): trained from scratch for a few
            thousand steps, the running statistics then trail the moving weights and the eval-mode network is
            not the one that was trained. 0.1 (PyTorch's default) follows them; fine-tuning ImageNet weights
            for long can go back to 0.01.
        hint_dim: width of the FitNets hint regressor (0: none), a linear map from the rgb stream's temporal
            features to the teacher's pose-stream features, which the KD loss regresses them onto (`--hint_weight`).
            It teaches an RGB-only student, frame by frame, what the teacher reads from the landmarks (hand shape,
            location); like the auxiliary heads it runs in training mode only.
        hint_level: "sequence": the regressor reads the rgb stream's temporal features (T' = T / 4) and the
            target is the teacher's pose stream output; "frames": it reads each frame's backbone features and the
            target is the teacher's per-frame landmark embedding (its pose MLP), on frames where a hand is seen;
            "hands": it reads each frame's backbone features and the target is each detected hand's shape (its 21
            landmarks relative to the wrist in the image plane, in hand sizes; hint_dim HAND_SHAPE_DIM), straight
            from the data. Depth is left out: its variance is 8x the image plane's and the pixels barely show it.
        hand_crop: side in input pixels of the hand patches (0: none): an RGB-only stream for the hand shapes,
            which MobileNetV3's early strides blur away in small frames (STMC-style; `cslr.models.hands`). The
            hands are located from the frame itself, so inference needs no landmarks; training needs them for
            the locator's loss (the recipe loads the pose stream for it).
        backbone_pool: with hand patches, the backbone reads the frame average-pooled by this factor (1: as is)
            while the patches are still cut at full resolution: the trajectory and the body need no fine detail,
            the hand shapes do (`--backbone_pool 2` on 64x64 frames: forward + backward of 8 videos x 60 frames
            0.58 -> 0.21 s on 2 threads, the recipe's epochs 2.2x shorter).
    """

    MODALITIES = MODALITIES  # the stream sets this architecture takes (a class constant, not a field)

    num_classes: int = 0
    modality: str = "rgb"
    backbone: str = "mobilenet_v3_small"
    width_mult: float = 1.0
    temporal_hidden: int = 256
    head: str = "lstm"
    lstm_hidden: int = 128
    lstm_layers: int = 2
    pose_parts: tuple[str, ...] = DEFAULT_POSE_PARTS
    pose_hidden: int = 64
    dropout: float = 0.1
    bn_momentum: float = 0.1
    aux_heads: bool = True
    hint_dim: int = 0
    hint_level: str = "sequence"
    hand_crop: int = 0
    backbone_pool: int = 1

    def __post_init__(self):
        self.check_classes_and_streams()
        for name, value, choices in (("backbone", self.backbone, BACKBONES), ("head", self.head, HEADS),
                                     ("hint_level", self.hint_level, HINT_LEVELS)):
            if value not in choices:
                raise ValueError(f"StudentConfig.{name} {value!r}: choose from {choices}")
        if self.hint_level == "hands" and self.hint_dim not in (0, HAND_SHAPE_DIM):
            raise ValueError(f"hint_level 'hands' regresses {HAND_SHAPE_DIM} values (2 hands x 21 landmarks x 2): "
                             f"--hint_dim {HAND_SHAPE_DIM}, not {self.hint_dim}")
        if self.hand_crop < 0:
            raise ValueError(f"StudentConfig.hand_crop must be >= 0 (0: no hand patches), got {self.hand_crop}")
        if self.backbone_pool < 1 or (self.backbone_pool > 1 and not self.hand_crop):
            raise ValueError(f"StudentConfig.backbone_pool {self.backbone_pool}: must be >= 1, and > 1 only with hand "
                             "patches (hand_crop), which keep the full resolution")


class FrameEncoder(nn.Module):
    """MobileNetV3 features + global average pool, applied to each frame independently.

    Args:
        backbone: "mobilenet_v3_small" or "mobilenet_v3_large".
        width_mult: channel multiplier passed to torchvision.
        bn_momentum: momentum of the backbone's BatchNorm running statistics (StudentConfig.bn_momentum).
        hand_crop: side of the hand patches (StudentConfig.hand_crop; 0: none).
        pool: the backbone reads the frame average-pooled by this factor (StudentConfig.backbone_pool).
    """

    def __init__(self, backbone: str = "mobilenet_v3_small", width_mult: float = 1.0, bn_momentum: float = 0.1,
                 hand_crop: int = 0, pool: int = 1):
        super().__init__()
        net = getattr(torchvision.models, backbone)(weights=None, width_mult=width_mult)
        self.features = net.features  # the classifier of the ImageNet model is not used
        self.out_channels = net.features[-1].out_channels
        self.locator = self.hands = None
        self.pool = pool
        if hand_crop:  # the locator reads the deepest features of stride <= 8 frame pixels
            self.split, mid_channels = stride8_split(self.features, max_stride=8 // pool)
            self.locator, self.hands = HandLocator(mid_channels), HandPatches(hand_crop)
            self.out_channels += self.hands.out_dim
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        # NHWC: MobileNetV3's depthwise convs train ~3.5x faster on CPU (oneDNN) than in NCHW (forward + backward
        # of 600 32x32 frames on one thread: 3.6 s NCHW, 1.0 s NHWC; input alone in NHWC: 2.3 s), and tensor
        # cores want it under AMP. Module.to(device), state-dict loads and DDP keep the layout; a checkpoint's
        # tensors load into either layout.
        self.set_layout(channels_last=True)
        self.normalize = ImageNetNormalize(ndim=4)

    def forward(self, frames: Tensor) -> tuple[Tensor, dict]:
        """(N, 3, S, S) RGB in [0, 255] (uint8 or float) -> (N, C) features, and with hand patches
        {"hand_xy": (N, 2, 2) the hand centres, in training mode "hand_shape": (N, 2, 42) their shapes} (else {})."""
        x = self.normalize(frames).contiguous(memory_format=self.memory_format)
        if self.hands is None:
            return self.features(x).mean(dim=(2, 3)), {}  # (N, C)
        mid = self.features[:self.split](F.avg_pool2d(x, self.pool) if self.pool > 1 else x)
        xy = self.locator(mid)  # (N, 2, 2)
        feats = self.features[self.split:](mid).mean(dim=(2, 3))
        hands, shape = self.hands(x, xy)
        extra = {"hand_xy": xy} if shape is None else {"hand_xy": xy, "hand_shape": shape}
        return torch.cat([feats, hands.to(feats.dtype)], dim=1), extra

    def set_layout(self, channels_last: bool) -> None:
        """Weights and activations in NHWC (the default) or in torchvision's NCHW (same results)."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for part in (self.features, self.locator, self.hands):
            if part is not None:
                part.to(memory_format=self.memory_format)
        if self.hands is not None:
            self.hands.memory_format = self.memory_format  # the patches' layout (their encoder: -40 % time in NHWC)


class Student(nn.Module):
    """MobileNetV3 per frame, temporal conv, BiLSTM or conv head, CTC classifier (see module docstring)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.frames = FrameEncoder(cfg.backbone, cfg.width_mult, cfg.bn_momentum, cfg.hand_crop,
                                   cfg.backbone_pool)
        self.dropout = nn.Dropout(cfg.dropout)
        self.temporal = TemporalConv(self.frames.out_channels, cfg.temporal_hidden, ("K5", "P2", "K5", "P2"))
        self.pose = PoseEncoder(cfg.pose_parts, cfg.pose_hidden, cfg.dropout) if "pose" in cfg.modality else None
        feat_dim = cfg.temporal_hidden + (cfg.pose_hidden if self.pose is not None else 0)
        if cfg.head == "lstm":
            self.head = BiLSTMHead(feat_dim, cfg.lstm_hidden, cfg.lstm_layers, cfg.dropout)
            head_dim = self.head.out_dim
        else:
            self.head = TemporalConv(feat_dim, feat_dim, ("K3",))
            head_dim = feat_dim
        self.classifier = Classifier(head_dim, cfg.num_classes, cfg.dropout)
        streams = {"rgb": cfg.temporal_hidden, **({"pose": cfg.pose_hidden} if self.pose is not None else {})}
        self.aux_heads = nn.ModuleDict(
            {name: Classifier(dim, cfg.num_classes, cfg.dropout) for name, dim in streams.items()} if cfg.aux_heads else {}
        )
        hint_in = cfg.temporal_hidden if cfg.hint_level == "sequence" else self.frames.out_channels
        self.hint = nn.Linear(hint_in, cfg.hint_dim) if cfg.hint_dim > 0 else None

    def output_length(self, lengths: Tensor | int):
        """Exact number of output frames for `lengths` input frames: ceil(T / 4), as the teacher."""
        return self.temporal.output_length(lengths)

    def encode_frames(self, rgb: Tensor, lengths: Tensor | None) -> tuple[Tensor, dict]:
        """(B, T, 3, S, S) -> (B, T, C) per-frame features, and with hand patches {"hand_xy": (B, T, 2, 2),
        "hand_shape": (B, T, 2, 42)} (else {}); the backbone sees only valid frames (zeros elsewhere)."""
        B, T = rgb.shape[:2]
        if lengths is None or bool((lengths == T).all()):
            feats, hands = self.frames(rgb.flatten(0, 1))
            return feats.unflatten(0, (B, T)), {k: v.unflatten(0, (B, T)) for k, v in hands.items()}
        # Padding frames would cost compute and, in training, shift the BatchNorm statistics.
        valid = length_mask(lengths, T)  # (B, T)
        per_frame = self.frames(rgb[valid])  # (N_valid, C), {name: (N_valid, ...)}
        padded = []
        for v in (per_frame[0], *per_frame[1].values()):
            full = v.new_zeros(B, T, *v.shape[1:])
            full[valid] = v
            padded.append(full)
        return padded[0], dict(zip(per_frame[1], padded[1:]))

    def forward(self, rgb: Tensor | None = None, pose: Tensor | None = None, lengths: Tensor | None = None) -> dict:
        """Input frames -> CTC log-probabilities.

        Args:
            rgb: (B, T, 3, S, S) uint8 or float in [0, 255] (required).
            pose: (B, T, 543, 3) landmarks, NaN where missing (modality "rgb+pose" only; ignored otherwise).
            lengths: (B,) valid input frames per sample (default: all T; then no packing, as in ONNX export).
        Returns:
            {"log_probs": (B, T', V) fp32, "lengths": (B,) int64, "aux": {stream: (B, T', V) fp32} (training
             mode with aux_heads, else {}), "features": (B, T', C) the sequence fed to the head, zero at padded
             frames, and in training mode with hint_dim "hint": (B, T', hint_dim) or "hint_frames" /
             "hint_hands": (B, T, hint_dim); with hand patches in training mode "hand_xy": (B, T, 2, 2) each
             hand's located centre (x, y in [0, 1] of the frame, left hand first) and "hand_shape": (B, T, 2, 42)
             its shape read from its patch}.
        """
        if rgb is None:
            raise ValueError("the student needs an 'rgb' input")
        if self.pose is not None and pose is None:
            raise ValueError(f"student with modality {self.cfg.modality!r} needs a 'pose' input")
        B, T = rgb.shape[:2]
        full = lengths is None
        if full:
            lengths = torch.full((B,), T, dtype=torch.long, device=rgb.device)
        lengths = lengths.to(device=rgb.device, dtype=torch.long)
        if not full and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths must be in [1, {T}], got {lengths.tolist()}")

        frame_feats, hands = self.encode_frames(rgb, None if full else lengths)  # (B, T, C), hand_xy, hand_shape
        x = self.dropout(frame_feats)
        features, out_lengths = self.temporal(x, None if full else lengths)  # (B, T', hidden)
        if full:
            out_lengths = self.output_length(lengths)
        streams = {"rgb": features}
        if self.pose is not None:
            streams["pose"], _ = self.pose(pose, None if full else lengths)  # (B, T', pose_hidden)
            features = torch.cat([features, streams["pose"]], dim=-1)
        aux = {name: head(streams[name]) for name, head in self.aux_heads.items()} if self.training else {}
        if self.cfg.head == "lstm":
            hidden = self.head(features, None if full else out_lengths)  # (B, T', 2 * lstm_hidden)
        else:
            hidden, _ = self.head(features, None if full else out_lengths)  # (B, T', C)
        out = {"log_probs": self.classifier(hidden), "lengths": out_lengths, "aux": aux, "features": features}
        if self.hint is not None and self.training:
            if self.cfg.hint_level != "sequence":
                out[f"hint_{self.cfg.hint_level}"] = self.hint(frame_feats)  # "hint_frames" / "hint_hands"
            else:
                out["hint"] = self.hint(streams["rgb"])
        if self.training:
            out.update(hands)
        return out
