"""Hand patches for an RGB-only student: locate both hands in each frame, crop them at full resolution, encode them.

A hand is a few pixels across in a small frame, and MobileNetV3's stride-2 stem and stride-4 first block reduce
it to a pixel or two before any layer can read its shape. STMC's answer (Zhou et al., "Spatial-Temporal Multi-Cue
Network for Continuous Sign Language Recognition", AAAI 2020) is to locate the hands from the network's own
mid-level features, trained against keypoints that exist in training only, and to crop them for a separate
stream; at inference nothing but the frames is needed. Here:

    frames (N, 3, S, S), normalised
      -> the backbone's layers down to stride 8 -> (N, C8, S/8, S/8) (a backbone that reads the frame pooled by 2,
         `--backbone_pool 2`: its layers down to stride 4, the same S/8 map; the patches keep full resolution)
      -> HandLocator: 3x3 conv, ReLU, 1x1 conv -> 2 heatmaps (left, right hand; MediaPipe's labels)
         -> spatial softmax -> soft-argmax -> "hand_xy" (N, 2, 2) in [0, 1] (x, y of each hand's centre)
      -> HandPatches: a (P, P) window at each centre, cut from the normalised frame with RoIAlign (bilinear, the
         window position detached: the locator learns from its own loss) -> a small CNN shared by both hands
         -> (N, 2 * D) + the centres (N, 4): the hand features, concatenated to the frame's global features;
         in training a linear map also reads each hand's shape from its features -> "hand_shape" (N, 2, 42).

The locator's loss (`cslr.trainer.kd.hand_locate_loss`) is the distance from each predicted centre to the mean of
that hand's detected landmarks, in patch sides; the shape's (`hand_shape_loss`, `--hand_shape_weight`) is the
Huber loss (the squared error up to one hand size) to the hand's landmarks relative to its wrist, in hand sizes.
Frames where a hand's landmarks are missing count for neither.
Both modules export to ONNX (RoiAlign, opset 16+).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

HAND_FEATURES = 64  # per hand, the patch encoder's output width
HAND_SHAPE_DIM = 2 * 21 * 2  # both hands' 21 landmarks, wrist-relative, x y


def stride8_split(features: nn.Sequential, probe: int = 64, max_stride: int = 8) -> tuple[int, int]:
    """(k, channels): `features[:k]` is the deepest prefix of the backbone whose output stride is at most
    `max_stride` (8; 4 for a backbone that reads frames pooled by 2), and its output channels (found with one probe
    frame, so any torchvision MobileNetV3 width works)."""
    x = torch.zeros(1, 3, probe, probe)
    k, channels = 0, 3
    with torch.no_grad():
        for i, layer in enumerate(features):
            x = layer(x)
            if probe // x.shape[-1] > max_stride:
                break
            k, channels = i + 1, x.shape[1]
    if k == 0:
        raise ValueError(f"the backbone has no stage of stride <= {max_stride} to locate the hands on")
    return k, channels


class HandLocator(nn.Module):
    """(N, C, h, w) stride-8 features -> (N, 2, 2): each hand's centre (x, y) in [0, 1] of the frame."""

    def __init__(self, in_channels: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 2, 1))

    def forward(self, feats: Tensor) -> Tensor:
        heat = self.net(feats.float()).flatten(2).softmax(-1)  # (N, 2, h * w)
        h, w = feats.shape[-2:]
        ys = (torch.arange(h, device=feats.device, dtype=heat.dtype) + 0.5) / h
        xs = (torch.arange(w, device=feats.device, dtype=heat.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(h * w, 2)  # (h * w, 2) x, y
        return heat @ grid  # (N, 2, 2)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class HandPatches(nn.Module):
    """Cut a (P, P) window around each hand centre and encode it -> (N, 2 * HAND_FEATURES + 4).

    Args:
        patch: P, the window side in input pixels (and the encoder's input size: no resampling of the scale).
    """

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch
        self.encoder = nn.Sequential(_conv(3, 16, 1), _conv(16, 32, 2), _conv(32, HAND_FEATURES, 2))
        self.shape = nn.Linear(HAND_FEATURES, HAND_SHAPE_DIM // 2)  # training only: the hand's shape, from its patch
        self.out_dim = 2 * HAND_FEATURES + 4
        self.memory_format = torch.contiguous_format

    def windows(self, frames: Tensor, centres: Tensor) -> Tensor:
        """(N, 3, S, S) frames, (N, 2, 2) centres in [0, 1] -> (N * 2, 3, P, P) patches (left hand first)."""
        n, size = frames.shape[0], frames.shape[-1]
        c = centres.detach().float().reshape(n * 2, 2) * size  # (N * 2, 2) pixels
        half = self.patch / 2
        idx = torch.arange(n, device=frames.device, dtype=c.dtype).repeat_interleave(2)[:, None]
        boxes = torch.cat([idx, c - half, c + half], dim=1)  # (N * 2, 5): frame, x1, y1, x2, y2
        return roi_align(frames.float().contiguous(), boxes, (self.patch, self.patch), spatial_scale=1.0,
                         sampling_ratio=2, aligned=True)

    def forward(self, frames: Tensor, centres: Tensor) -> tuple[Tensor, Tensor | None]:
        """-> (N, 2 * D + 4) the hands' features and centres, and in training mode (N, 2, HAND_SHAPE_DIM / 2)
        each hand's shape read from its patch (trained against the landmarks' hand shapes:
        `cslr.trainer.kd.hand_shape_loss`; None in eval mode, where nothing reads it)."""
        n = frames.shape[0]
        patches = self.windows(frames, centres).contiguous(memory_format=self.memory_format)
        feats = self.encoder(patches).mean(dim=(2, 3))  # (N * 2, D)
        shape = self.shape(feats).reshape(n, 2, -1) if self.training else None
        return torch.cat([feats.reshape(n, -1), centres.reshape(n, 4).to(feats.dtype)], dim=1), shape
