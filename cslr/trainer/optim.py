"""Optimizer (no weight decay on norms and biases) and the warmup + cosine schedule, stepped per optimizer step."""

from __future__ import annotations

import math

import torch

from .config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; norms, biases and other 1-d parameters without."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Args: model: the (unwrapped) model; cfg: the `optim` section."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate)
    if cfg.optimizer == "adam":
        # Adam's weight decay is L2 added to the gradient (the original script's behaviour).
        return torch.optim.Adam(groups, lr=cfg.learning_rate)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_lambda(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step `step`: linear warmup to 1, then cosine down to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """Args: optimizer; cfg: the `optim` section; steps_per_epoch: optimizer steps per epoch (per rank)."""
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = int(round(steps_per_epoch * cfg.warmup_epochs))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup, total, cfg.min_lr_ratio)
    )
