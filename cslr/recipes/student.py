"""The student's recipe: a `run_training` hook that chooses where the
distillation targets come from (sidecar shards offline, or the frozen teacher online).

    accelerate launch launch/student.py --teacher_checkpoint runs/teacher/best_model.pth
"""

from __future__ import annotations

import logging

import torch

from cslr.datasets.soft_targets import load_soft_manifest
from cslr.models.student import HAND_SHAPE_DIM
from cslr.trainer.kd import load_frozen_teacher, make_kd_loss

from .train import LossSetup

logger = logging.getLogger("cslr")


def setup_student(cfg, accelerator, model: torch.nn.Module, vocab):
    """`run_training` hook of launch/student.py: the target source -> LossSetup (the KD loss, and
    the online teacher's streams, which the loader must provide beside the student's)."""
    kd = cfg.kd
    soft_dir = getattr(cfg.data, "soft_targets", "")
    teacher = None  # the online teacher, loaded once: its pose stream also gives the hints
    if kd.alpha > 0 and not soft_dir:
        if not kd.teacher_checkpoint:
            raise ValueError("KD needs soft targets: give --teacher_checkpoint (online) or --soft_targets DIR "
                             "(offline)")
        teacher = load_frozen_teacher(kd.teacher_checkpoint, vocab, accelerator.device, image_size=cfg.data.image_size)
    hint = _hint_teacher(cfg, accelerator, model, vocab, teacher)
    hand_crop = getattr(model.cfg, "hand_crop", 0)
    loss_args = {"hint_teacher": hint, "hint_weight": kd.hint_weight,
                 "hand_scale": cfg.data.image_size / hand_crop if hand_crop else 0.0,
                 "hand_shape_weight": kd.hand_shape_weight}
    # The landmarks train the hints and the hand locator; the student does not read them.
    landmark_streams = ("pose",) if kd.hint_weight > 0 or hand_crop else ()
    if hand_crop:
        pool = getattr(model.cfg, "backbone_pool", 1)
        logger.info("hand patches: %dx%d windows around the hands located in each %dx%d frame, hand shapes at "
                    "weight %.2f%s", hand_crop, hand_crop, cfg.data.image_size, cfg.data.image_size,
                    kd.hand_shape_weight, f"; the backbone reads the frames pooled by {pool}" if pool > 1 else "")
    if kd.alpha == 0:
        logger.info("--alpha 0: CTC only, no distillation")
        return LossSetup(make_kd_loss(0.0, kd.temperature, aux_weight=cfg.model.aux_weight, **loss_args),
                         extra_streams=landmark_streams)
    if soft_dir:
        _check_soft_manifest(soft_dir, kd.temperature, len(vocab))
        logger.info("KD (offline): soft targets from %s, alpha %.2f, T %.2f", soft_dir, kd.alpha, kd.temperature)
        return LossSetup(make_kd_loss(kd.alpha, kd.temperature, aux_weight=cfg.model.aux_weight, **loss_args),
                         extra_streams=landmark_streams)
    logger.info("KD (online): teacher %s (%s), alpha %.2f, T %.2f", kd.teacher_checkpoint, teacher.cfg.modality,
                kd.alpha, kd.temperature)
    # Student and teacher read the same batch: the loader provides what both need.
    return LossSetup(make_kd_loss(kd.alpha, kd.temperature, teacher, autocast=accelerator.autocast,
                                  aux_weight=cfg.model.aux_weight, **loss_args),
                     extra_streams=tuple(dict.fromkeys(teacher.cfg.streams + landmark_streams)))


def _hint_teacher(cfg, accelerator, model: torch.nn.Module, vocab,
                  online: torch.nn.Module | None = None) -> torch.nn.Module | None:
    """`--hint_weight B > 0`: the frozen teacher whose pose stream gives the hint targets (`online`, the online
    KD teacher when there is one, else loaded here), checked against the student's hint regressor (`--hint_dim`);
    None without hints or for `hands`. The teacher's pose encoder runs on each batch (cheap beside the student),
    also when the soft targets come from sidecar shards."""
    kd, hint_dim, level = cfg.kd, getattr(model.cfg, "hint_dim", 0), getattr(model.cfg, "hint_level", "sequence")
    if kd.hint_weight == 0:
        if hint_dim:
            raise ValueError(f"--hint_dim {hint_dim} without --hint_weight: the hint regressor would not be trained")
        return None
    if level == "hands":
        if hint_dim != HAND_SHAPE_DIM:
            raise ValueError(f"--hint_level hands needs --hint_dim {HAND_SHAPE_DIM}, the student has {hint_dim}")
        logger.info("hints: student frame features -> the hand shapes of the landmarks (%d values), weight %.2f",
                    hint_dim, kd.hint_weight)
        return None
    if not kd.teacher_checkpoint:
        raise ValueError("--hint_weight needs --teacher_checkpoint: the hint targets are its pose-stream features")
    teacher = online if online is not None else load_frozen_teacher(kd.teacher_checkpoint, vocab, accelerator.device)
    if "pose" not in teacher.encoders:
        raise ValueError(f"{kd.teacher_checkpoint}: the teacher ({teacher.cfg.modality}) has no pose stream to give "
                         "hints; --hint_weight needs an rgb+pose or pose teacher")
    width = teacher.encoders["pose"].out_channels
    if hint_dim != width:
        raise ValueError(f"--hint_weight needs --hint_dim {width} (the pose stream width of {kd.teacher_checkpoint}),"
                         f" the student has {hint_dim}")
    logger.info("hints: student rgb features -> the teacher's pose stream (%d wide, %s level), weight %.2f", width,
                level, kd.hint_weight)
    return teacher


def _check_soft_manifest(soft_dir: str, temperature: float, num_classes: int) -> None:
    """The sidecar's temperature and vocabulary size must be this run's (targets are stored already softened)."""
    man = load_soft_manifest(soft_dir)
    if abs(float(man["temperature"]) - temperature) > 1e-6:
        raise ValueError(f"{soft_dir}/manifest.json: soft targets were made at temperature {man['temperature']}, "
                         f"this run uses --temperature {temperature}; regenerate them or match the flag")
    if int(man["vocab_size"]) != num_classes:
        raise ValueError(f"{soft_dir}/manifest.json: vocab_size {man['vocab_size']} differs from the data's "
                         f"{num_classes} classes")
