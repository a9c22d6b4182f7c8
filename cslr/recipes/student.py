"""The student's recipe: a `run_training` hook that chooses where the
distillation targets come from (sidecar shards offline, or the frozen teacher online).

    accelerate launch launch/student.py --teacher_checkpoint runs/teacher/best_model.pth
"""

from __future__ import annotations

import logging

import torch

from cslr.datasets.soft_targets import load_soft_manifest
from cslr.trainer.kd import load_frozen_teacher, make_kd_loss

from .train import LossSetup

logger = logging.getLogger("cslr")


def setup_student(cfg, accelerator, model: torch.nn.Module, vocab):
    """`run_training` hook of launch/student.py: the target source -> LossSetup (the KD loss, and
    the online teacher's streams, which the loader must provide beside the student's)."""
    kd = cfg.kd
    soft_dir = getattr(cfg.data, "soft_targets", "")
    if kd.alpha == 0:
        logger.info("--alpha 0: CTC only, no distillation")
        return LossSetup(make_kd_loss(0.0, kd.temperature, aux_weight=cfg.model.aux_weight))
    if soft_dir:
        _check_soft_manifest(soft_dir, kd.temperature, len(vocab))
        logger.info("KD (offline): soft targets from %s, alpha %.2f, T %.2f", soft_dir, kd.alpha, kd.temperature)
        return LossSetup(make_kd_loss(kd.alpha, kd.temperature, aux_weight=cfg.model.aux_weight))
    if not kd.teacher_checkpoint:
        raise ValueError("KD needs soft targets: give --teacher_checkpoint (online) or --soft_targets DIR (offline)")
    teacher = load_frozen_teacher(kd.teacher_checkpoint, vocab, accelerator.device)
    logger.info("KD (online): teacher %s (%s), alpha %.2f, T %.2f", kd.teacher_checkpoint, teacher.cfg.modality,
                kd.alpha, kd.temperature)
    # Student and teacher read the same batch: the loader provides what both need.
    return LossSetup(make_kd_loss(kd.alpha, kd.temperature, teacher, autocast=accelerator.autocast,
                                  aux_weight=cfg.model.aux_weight), extra_streams=teacher.cfg.streams)


def _check_soft_manifest(soft_dir: str, temperature: float, num_classes: int) -> None:
    """The sidecar's temperature and vocabulary size must be this run's (targets are stored already softened)."""
    man = load_soft_manifest(soft_dir)
    if abs(float(man["temperature"]) - temperature) > 1e-6:
        raise ValueError(f"{soft_dir}/manifest.json: soft targets were made at temperature {man['temperature']}, "
                         f"this run uses --temperature {temperature}; regenerate them or match the flag")
    if int(man["vocab_size"]) != num_classes:
        raise ValueError(f"{soft_dir}/manifest.json: vocab_size {man['vocab_size']} differs from the data's "
                         f"{num_classes} classes")
