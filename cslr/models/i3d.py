"""I3D: Inception-V1 inflated to 3D (Carreira & Zisserman, 2017), up to Mixed_5c, for CSLR.

Layout (endpoint names as in the original, so Kinetics checkpoints can be mapped by name):

    Conv3d_1a_7x7 (64, stride 2,2,2) - MaxPool3d_2a (1x3x3, s 1,2,2) - Conv3d_2b_1x1 (64) - Conv3d_2c_3x3 (192)
    - MaxPool3d_3a (1x3x3, s 1,2,2) - Mixed_3b, 3c - MaxPool3d_4a (3x3x3, s 2,2,2) - Mixed_4b..4f
    - MaxPool3d_5a (2x2x2, s **1**,2,2) - Mixed_5b, 5c - global spatial average -> (B, T', C)

Every unit is Conv3d (no bias) + BatchNorm3d + ReLU; at width 1.0 the backbone has 12.29 M parameters.

Total temporal stride 4, not the original 8: CSLR needs about one output per sign phase (CTC needs
T' >= the number of glosses plus repeats). We keep time at MaxPool3d_5a rather than at the stem:
the two strided layers then stay where Kinetics-pretrained weights were trained with them, and the
extra cost falls on Mixed_5b/5c, which run on the smallest maps (7x7 at 224 px): 113 vs 111 GMACs
for 64 frames at 224x224 (+2%), against 222 (+100%) for an unstrided stem, which doubles every layer
(torch.utils.flop_counter). Conv1's 7-frame kernel still sees every frame at stride 2. T' = ceil(ceil(T / 2) / 2) = ceil(T / 4) (`output_length`).

Padding invariance: with `lengths`, padded frames are zeroed after every layer (and inside the
Inception branches, before each 3x3x3 kernel), so in eval mode a sample's features do not depend on
how much padding follows it. Max-pools see zeros, not -inf, at padded frames; their inputs are
post-ReLU (>= 0) so that changes nothing. In train mode BatchNorm statistics include padded frames.

Input: RGB (B, T, 3, H, W), uint8 or float in [0, 255]; normalised inside with ImageNet mean/std, so
deployment takes raw frames. Spatial pools use padding, so any H, W >= 1 works (32x32 to 224x224).

Run the tests: `/work/venv/bin/pytest tests/test_models.py -q -k i3d`
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .heads import conv_output_length, length_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """RGB in [0, 255] (uint8 or float), channels at dim 1, any number of trailing dims -> ImageNet-normalised fp32.

    fp32 whatever the input: autocast then picks the following convs' dtype.
    """

    def __init__(self, ndim: int):
        super().__init__()
        shape = (1, 3) + (1,) * (ndim - 2)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(shape) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(shape) * 255, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std

# Inception blocks: name -> (b0 1x1, b1 1x1 reduce, b1 3x3, b2 1x1 reduce, b2 3x3, b3 pool-proj 1x1).
INCEPTION_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def scale_channels(channels: int, width_mult: float, divisor: int = 8, min_channels: int = 8) -> int:
    """Channels scaled by `width_mult`, rounded to a multiple of `divisor` (at least `min_channels`).

    As timm's make_divisible: rounding never loses more than 10%. Width 1.0 keeps I3D's channels (all
    multiples of 8).
    """
    scaled = channels * width_mult
    out = max(min_channels, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return out


class Unit3D(nn.Sequential):
    """Conv3d (no bias, 'same' padding k // 2) + BatchNorm3d + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        super().__init__(
            nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False),
            # eps and momentum of the TF original (BN decay 0.99).
            nn.BatchNorm3d(out_ch, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=True),
        )


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1-3x3x3 | 1x1-3x3x3 | maxpool 3x3x3-1x1."""

    def __init__(self, in_ch: int, channels: tuple[int, ...]):
        super().__init__()
        c0, c1r, c1, c2r, c2, c3 = channels
        self.b0 = Unit3D(in_ch, c0)
        self.b1a, self.b1b = Unit3D(in_ch, c1r), Unit3D(c1r, c1, 3)
        self.b2a, self.b2b = Unit3D(in_ch, c2r), Unit3D(c2r, c2, 3)
        self.b3a, self.b3b = nn.MaxPool3d(3, stride=1, padding=1), Unit3D(in_ch, c3)
        self.out_channels = c0 + c1 + c2 + c3

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, C, T, H, W), mask (B, 1, T, 1, 1) or None -> (B, C_out, T, H, W)."""
        b1, b2 = self.b1a(x), self.b2a(x)
        if mask is not None:  # 1x1 outputs at padded frames are ReLU(BN(0)) != 0: zero before the 3x3x3.
            b1, b2 = b1 * mask, b2 * mask
        return torch.cat([self.b0(x), self.b1b(b1), self.b2b(b2), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """Inception-V1 I3D backbone up to Mixed_5c: raw RGB frames -> (B, T', C) spatially pooled features.

    Args:
        width_mult: channel multiplier (channels rounded to multiples of 8, at least 8).
        dropout: dropout on the pooled features.
    """

    def __init__(self, width_mult: float = 1.0, dropout: float = 0.0):
        super().__init__()
        ch = lambda c: scale_channels(c, width_mult)  # noqa: E731
        layers = {
            "Conv3d_1a_7x7": Unit3D(3, ch(64), 7, stride=(2, 2, 2)),
            "MaxPool3d_2a_3x3": nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            "Conv3d_2b_1x1": Unit3D(ch(64), ch(64)),
            "Conv3d_2c_3x3": Unit3D(ch(64), ch(192), 3),
            "MaxPool3d_3a_3x3": nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        }
        in_ch = ch(192)
        for name, channels in INCEPTION_CHANNELS.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = nn.MaxPool3d(3, stride=(2, 2, 2), padding=1)
            elif name == "Mixed_5b":
                # Temporal stride 1 here (original: 2x2x2, stride 2); ceil mode so 1x1 maps survive.
                layers["MaxPool3d_5a_2x2"] = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2), ceil_mode=True)
            layers[name] = InceptionBlock(in_ch, tuple(ch(c) for c in channels))
            in_ch = layers[name].out_channels
        self.layers = nn.ModuleDict(layers)
        self.dropout = nn.Dropout(dropout)
        self.out_channels = in_ch
        self.normalize = ImageNetNormalize(ndim=5)
        self._init_weights()

    def _init_weights(self):
        """He init (fan_in): activations keep their scale through the 57 convs. PyTorch's default conv
        init shrinks them at every unit, leaving an untrained network's eval-mode features near 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _layer_length(layer: nn.Module, lengths):
        """Temporal output length of one layer (only Conv3d_1a and MaxPool3d_4a change it)."""
        if isinstance(layer, Unit3D):
            conv = layer[0]
            return conv_output_length(lengths, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        if isinstance(layer, nn.MaxPool3d):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (layer.kernel_size, layer.stride, layer.padding))
            return conv_output_length(lengths, k, s, p, ceil_mode=layer.ceil_mode)
        return lengths  # Inception blocks keep the length

    def output_length(self, lengths: Tensor | int):
        """Exact number of output frames for `lengths` input frames: ceil(T / 4)."""
        for layer in self.layers.values():
            lengths = self._layer_length(layer, lengths)
        return lengths

    def forward(self, rgb: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) RGB in [0, 255], (B,) lengths -> (B, T', C) features, (B,) output lengths."""
        if rgb.ndim != 5 or rgb.shape[2] != 3:
            raise ValueError(f"I3D expects RGB frames (B, T, 3, H, W), got shape {tuple(rgb.shape)}")
        B, T = rgb.shape[:2]
        full = lengths is None or bool((lengths == T).all())  # no padding: skip the masks
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=rgb.device)
        x = self.normalize(rgb.permute(0, 2, 1, 3, 4))  # (B, 3, T, H, W) fp32
        mask = None
        for layer in self.layers.values():
            if not full:
                mask = length_mask(lengths, x.shape[2]).view(B, 1, -1, 1, 1).to(x.dtype)
                x = x * mask  # padded frames -> 0, as the convs' own zero padding
            x = layer(x, mask) if isinstance(layer, InceptionBlock) else layer(x)
            lengths = self._layer_length(layer, lengths)
        feats = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T', C)
        if not full:
            feats = feats * length_mask(lengths, feats.shape[1])[..., None].to(feats.dtype)
        return self.dropout(feats), lengths
