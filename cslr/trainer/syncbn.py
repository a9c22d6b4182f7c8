"""`--sync_bn`: BatchNorm statistics over the global batch (all data-parallel ranks) instead of each rank's share.

    model = convert_sync_batchnorm(model, device)   # before accelerator.prepare; a no-op on one rank

On CUDA this is torch's `nn.SyncBatchNorm` (its fused kernels). torch's has no CPU kernels (it raises
"SyncBatchNorm expected input tensor to be on GPU"), so on CPU (gloo) every BatchNorm becomes `SyncBatchNormAnyDevice`:
the per-channel sum, sum of squares and count of each rank summed with one differentiable all-reduce, so autograd carries every rank's loss back through the shared
statistics. It equals `nn.BatchNorm` on the whole batch to float rounding (~1e-7), and with it one optimizer step
of 2 ranks on two halves of a batch equals one rank on the whole batch (tests/test_rank_invariance.py). The state
dict keys are BatchNorm's: checkpoints load into the plain model.

When it matters: BatchNorm sees each rank's (B, T) frames, not B videos. The student normalises over B x T frames
(4 x ~100 = hundreds per rank), the teacher's I3D over B x T/2..T/8 positions x H x W, so the per-rank statistics
are already well estimated; small per-rank batches (1-2 videos) are where syncing counts.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient is the sum of every rank's gradient. (What the deprecated
    `torch.distributed.nn.functional.all_reduce` does; its successor in `_functional_collectives` has no autograd.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class SyncBatchNormAnyDevice(_BatchNorm):
    """BatchNorm over the batch of all ranks in training mode, on any device (CPU/gloo included)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not _distributed():
            return super().forward(input)  # eval (running statistics) or no process group: plain BatchNorm
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        # Sums in float64: E[x^2] - E[x]^2 from float32 sums loses digits when the mean dominates the spread.
        x64 = input.double()
        local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims),
                           x64.new_full((1,), input.numel() // c)])
        total = _AllReduceSum.apply(local)  # differentiable: backward sums every rank's gradient
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, c) + (1,) * (input.dim() - 2)
        inv = torch.rsqrt(var + self.eps).to(input.dtype)
        y = (input - mean.to(input.dtype).view(shape)) * inv.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm{1,2,3}d of `model` synchronised across ranks (torch's on CUDA, `SyncBatchNormAnyDevice`
    elsewhere); returns the model (converted in place where possible). Call before `accelerator.prepare`."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNormAnyDevice):
        new = SyncBatchNormAnyDevice(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


__all__ = ["SyncBatchNormAnyDevice", "convert_sync_batchnorm"]
