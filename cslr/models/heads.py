"""Temporal heads shared by the teacher and the student.

- `TemporalConv`: VAC's K5-P2-K5-P2 block (1D conv + BN + ReLU, max-pool), lengths exact.
- `BiLSTMHead`: a bidirectional LSTM over packed sequences (padding never enters the recurrence).
- `Classifier`: dropout + linear to the CTC classes (blank = 0), returning fp32 log-probabilities.
- `conv_output_length`, `length_mask`: the length arithmetic and masks every temporal module uses.

Padding invariance: modules that mix time take `lengths` and zero the padded frames of their input
before every temporal kernel, so a sample's output (in eval mode) is the same whatever padding follows it.

Run the tests: `/work/venv/bin/pytest tests/test_models.py -q`
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def conv_output_length(length: Tensor | int, kernel: int, stride: int = 1, padding: int = 0, ceil_mode: bool = False):
    """Output length of a conv/pool along time (PyTorch's formula, dilation 1). Works on ints and int tensors."""
    span = length + 2 * padding - kernel
    if ceil_mode:
        # PyTorch ceil mode: ceil(span / stride), minus a window that would start past input + left padding.
        out = -(-span // stride) + 1
        if isinstance(out, Tensor):
            out = out - ((out - 1) * stride >= length + padding).long()
        elif (out - 1) * stride >= length + padding:
            out -= 1
        return out
    return span // stride + 1


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _parse_kernel(spec: str) -> tuple[str, int]:
    kind, size = spec[0], spec[1:]
    if kind not in "KP" or not size.isdigit() or int(size) < 1:
        raise ValueError(f"temporal kernel spec {spec!r}: expected 'K<size>' (conv) or 'P<size>' (max-pool)")
    return kind, int(size)


class TemporalConv(nn.Module):
    """VAC's temporal block over per-frame features: e.g. K5-P2-K5-P2 = conv5, pool2, conv5, pool2.

    `padding="same"` (default) pads convs by k//2 and pools in ceil mode, so K5-P2-K5-P2 maps T frames to
    ceil(T / 4), the teacher's length: frame-level distillation needs both sequences aligned.
    `padding="valid"` is the original VAC block (T -> ((T - 4) // 2 - 4) // 2; needs T >= 16).

    Args:
        in_ch: input feature size C.
        hidden: channels of every conv.
        kernel_sizes: sequence of "K<k>" (conv + BN + ReLU) and "P<k>" (max-pool, stride k).
        padding: "same" or "valid".
    """

    def __init__(self, in_ch: int, hidden: int, kernel_sizes: Sequence[str] = ("K5", "P2", "K5", "P2"),
                 padding: str = "same"):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"TemporalConv padding must be 'same' or 'valid', got {padding!r}")
        self.kernels = [_parse_kernel(k) for k in kernel_sizes]
        self.same = padding == "same"
        layers, ch = [], in_ch
        for kind, k in self.kernels:
            if kind == "K":
                layers.append(nn.Sequential(
                    nn.Conv1d(ch, hidden, k, padding=k // 2 if self.same else 0, bias=False),
                    nn.BatchNorm1d(hidden),
                    nn.ReLU(inplace=True),
                ))
                ch = hidden
            else:
                layers.append(nn.MaxPool1d(k, ceil_mode=self.same))
        self.layers = nn.ModuleList(layers)
        self.out_channels = ch

    def _layer_length(self, length, kind: str, k: int):
        if kind == "K":
            return conv_output_length(length, k, 1, k // 2 if self.same else 0)
        return conv_output_length(length, k, k, 0, ceil_mode=self.same)

    def output_length(self, lengths: Tensor | int):
        """Exact number of output frames for `lengths` input frames."""
        for kind, k in self.kernels:
            lengths = self._layer_length(lengths, kind, k)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, T, C) features, (B,) lengths -> (B, T', hidden), (B,) output lengths."""
        x = x.transpose(1, 2)  # (B, C, T)
        for (kind, k), layer in zip(self.kernels, self.layers):
            if lengths is not None:
                # Zero the padding: a conv at a sample's end then sees zeros as it would alone; a max-pool
                # over post-ReLU values (>= 0) is unchanged by extra zeros.
                x = x * length_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
                lengths = self._layer_length(lengths, kind, k)
            x = layer(x)
        if lengths is not None:
            x = x * length_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        return x.transpose(1, 2), lengths  # (B, T', hidden)


class BiLSTMHead(nn.Module):
    """Stacked bidirectional LSTM over packed sequences; runs in fp32 even under autocast.

    fp32 because autocast would otherwise pick per-op dtypes inside the recurrence (bf16 weights but
    fp32 states on some backends); the head is a small share of the teacher's compute.

    Args:
        in_dim: input feature size.
        hidden: hidden size per direction (output is 2 * hidden).
        num_layers: stacked layers.
        dropout: dropout between layers.
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, T, C), (B,) lengths -> (B, T, 2 * hidden) fp32, zeros at padded frames.

        `lengths=None`: no padding; the plain recurrence equals the packed one (and exports to ONNX).
        """
        with torch.autocast(x.device.type, enabled=False):
            if lengths is None:
                return self.lstm(x.float())[0]  # (B, T, 2 * hidden)
            packed = pack_padded_sequence(x.float(), lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out  # (B, T, 2 * hidden)


class Classifier(nn.Module):
    """Dropout + linear over the CTC classes; returns log-probabilities in fp32 (log_softmax of fp32 logits)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, num_classes) fp32 log-probs."""
        logits = self.fc(self.dropout(x))
        return F.log_softmax(logits.float(), dim=-1)
