"""Losses. CTC always in fp32 with `zero_infinity` (an impossible alignment gives 0, not inf)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
             blank: int = 0) -> torch.Tensor:
    """Mean over the batch of each sample's CTC loss (summed over its frames).

    Args:
        log_probs: (B, T, V) log-probabilities (log_softmax already applied).
        lengths: (B,) valid output frames.
        targets: (B, L) zero-padded label ids; target_lengths: (B,).
    """
    lp = log_probs.float().transpose(0, 1)  # (T, B, V), as F.ctc_loss wants
    per_sample = F.ctc_loss(lp, targets, lengths, target_lengths, blank=blank, reduction="none", zero_infinity=True)
    return per_sample.mean()


def teacher_loss(out: dict, batch: dict, aux_weight: float) -> tuple[torch.Tensor, dict]:
    """Main CTC + aux_weight * each auxiliary stream's CTC. Returns (loss, parts for logging)."""
    lengths = out["lengths"]
    main = ctc_loss(out["log_probs"], lengths, batch["targets"], batch["target_lengths"])
    parts = {"ctc": main.detach()}
    loss = main
    for name, lp in out.get("aux", {}).items():
        aux = ctc_loss(lp, lengths, batch["targets"], batch["target_lengths"])
        parts[f"ctc_{name}"] = aux.detach()
        loss = loss + aux_weight * aux
    return loss, parts


def plain_loss(aux_weight: float):
    """The Trainer's default `loss_fn` (no distillation): `teacher_loss`. A student with hand patches is refused:
    their locator learns from the KD recipe's loss (`cslr.trainer.kd.make_kd_loss`), which this one lacks."""
    def loss_fn(out: dict, batch: dict):
        if "hand_xy" in out:
            raise ValueError("a student with hand patches (--hand_crop) trains with launch/student.py, whose loss "
                             "trains their locator")
        return teacher_loss(out, batch, aux_weight)

    return loss_fn
