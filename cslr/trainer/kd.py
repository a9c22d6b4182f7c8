"""Knowledge distillation: CTC + frame-level KL to the teacher's softened distribution, with dense or top-K targets.

    loss = (1 - alpha) * CTC(student) + alpha * T^2 * KL(teacher_T || student_T)

KL is taken per valid student output frame and averaged over the valid frames of the batch (padding masked);
T^2 keeps the gradient scale of the soft term independent of T (Hinton et al., 2015). A student with auxiliary
heads on its streams adds `model.aux_weight` times each head's CTC and KL to the same terms (`distillation_loss`).

Soft targets (the contract with `launch/soft_targets.py` and the loader): per teacher output frame, the teacher's
log-probabilities at temperature T, log_softmax(teacher_log_probs / T), over K labels:
    soft_logp (B, T't, K) float, soft_idx (B, T't, K) int64 label ids, soft_lengths (B,) teacher frames.
Dense targets are K = V with soft_idx = arange(V). They come from sidecar shards (offline, batch keys from the
loader) or from the frozen teacher run on the same batch (online, `teacher_soft_targets`); both go through
the same `soft_target_kl`.

Top-K rule: the teacher's probabilities are renormalised over their K-label support, and so are the student's
(its tempered log-probs gathered at the same K labels, minus their logsumexp); the mass outside the support is
ignored on both sides. KL is then exact over the support; with K = V it is the dense KL.

Frame-count rule: student output frame j (of L_s valid) reads teacher frame floor((j + 0.5) * L_t / L_s)
(nearest, per sample). Equal counts map j -> j; train-time temporal rescaling of the student's input (offline
targets were computed on the unscaled video) makes them differ.

Feature hints (FitNets, Romero et al., 2015; `--hint_weight B`): a student with a hint regressor (`hint_dim`) adds
    B * mean over valid frames of mean_d (hint_d - layer_norm(teacher_pose_features)_d)^2
where the teacher's pose stream (its encoder alone, frozen, on the batch's landmarks) gives the features per
output frame (hint_level "sequence"), or its per-frame landmark embedding on the frames where it sees a hand
("frames": the student's regressor then reads each frame's backbone features), normalised per frame so the
term's scale does not depend on the teacher's. "hands" needs no teacher: each detected hand's shape from the
batch's landmarks (wrist-relative x, y in hand sizes) is the target of each frame. The RGB-only student
learns frame by frame what the teacher reads from the landmarks; at inference it needs none.

Hand patches (`--hand_crop P`, `cslr.models.hands`): a student that locates both hands itself ("hand_xy") adds
the locator's loss, `hand_locate_loss`: the L1 distance from each predicted centre to the mean of that hand's
detected landmarks, in patch sides, over the frames where all 21 were detected; and `--hand_shape_weight` times
`hand_shape_loss`, each patch's hand shape read by a linear map against the landmarks' (as "hands" hints, but
robust: Huber at 1 hand size, since hands seen edge-on give outlying targets).

Entry point: `accelerate launch launch/student.py` (see there); tests: `/work/venv/bin/pytest tests/test_kd.py -q`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cslr.datasets.soft_targets import select_soft
from cslr.eval.forward import model_forward
from cslr.models.checkpoint import model_from_checkpoint
from cslr.models.heads import length_mask
from cslr.models.pose import POSE_PARTS, normalise_landmarks

from .losses import teacher_loss

logger = logging.getLogger("cslr")

SOFT_KEYS = ("soft_logp", "soft_idx", "soft_lengths")


def align_frames(student_lengths: Tensor, teacher_lengths: Tensor, num_frames: int) -> Tensor:
    """(B,) student and teacher valid frame counts -> (B, num_frames) teacher frame index of each student frame.

    Student frame j maps to floor((j + 0.5) * L_t / L_s), computed exactly in integers; frames past L_s (padding)
    map to the last teacher frame (they are masked by the caller).
    """
    j = torch.arange(num_frames, device=student_lengths.device)[None, :]  # (1, Ts)
    ls = student_lengths.clamp(min=1)[:, None]  # (B, 1)
    lt = teacher_lengths.to(student_lengths.device)[:, None]  # (B, 1)
    idx = ((2 * j + 1) * lt) // (2 * ls)  # floor((j + 0.5) * lt / ls)
    return torch.minimum(idx, lt - 1).clamp(min=0)  # (B, Ts)


def soft_targets_from_log_probs(log_probs: Tensor, lengths: Tensor, temperature: float, topk: int = 0) -> dict:
    """Teacher output -> the contract's soft-target tensors at temperature T (top-K labels, or all with topk 0).

    Args:
        log_probs: (B, T', V) the teacher's log-probabilities (log_softmax of its logits).
        lengths: (B,) the teacher's valid output frames.
        temperature: T; log_softmax(log_probs / T) = log_softmax(logits / T) (shift invariance).
        topk: labels kept per frame (0 or >= V: dense).
    Returns:
        {"soft_logp": (B, T', K) fp32, "soft_idx": (B, T', K) int64, "soft_lengths": (B,) int64}.
    """
    V = log_probs.shape[-1]
    logp, idx = select_soft(log_probs, temperature, topk if 0 < topk < V else 0, dtype="float32")  # (B, T', K)
    if idx is None:  # dense
        idx = torch.arange(V, device=logp.device).expand_as(logp)
    return {"soft_logp": logp, "soft_idx": idx.long(), "soft_lengths": lengths.long()}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is True (0 when none is); masked entries may hold anything, NaN included."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def soft_target_kl(student_log_probs: Tensor, student_lengths: Tensor, soft_logp: Tensor, soft_idx: Tensor,
                   soft_lengths: Tensor, temperature: float) -> Tensor:
    """Mean over valid student frames of KL(teacher_T || student_T) restricted to the targets' label support.

    Args:
        student_log_probs: (B, Ts, V) student log-probabilities (log_softmax at T = 1).
        student_lengths: (B,) valid student frames.
        soft_logp, soft_idx: (B, Tt, K) teacher log-probs at temperature T and their label ids.
        soft_lengths: (B,) valid teacher frames.
        temperature: T, applied to the student here (the targets already carry it).
    Returns:
        scalar fp32 (without the T^2 factor).
    """
    B, Ts, V = student_log_probs.shape
    if soft_logp.shape != soft_idx.shape or soft_logp.shape[0] != B:
        raise ValueError(f"soft targets {tuple(soft_logp.shape)} / ids {tuple(soft_idx.shape)} do not fit a batch of {B}")
    if int(soft_idx.max()) >= V or int(soft_idx.min()) < 0:
        raise ValueError(f"soft target label ids must be in [0, {V}), got [{int(soft_idx.min())}, {int(soft_idx.max())}]"
                         " (teacher and student vocabularies differ?)")
    if int(soft_lengths.min()) < 1:
        raise ValueError(f"soft targets with no frame (soft_lengths {soft_lengths.tolist()})")
    frame = align_frames(student_lengths, soft_lengths, Ts)  # (B, Ts)
    K = soft_logp.shape[-1]
    gather = frame[..., None].expand(B, Ts, K)
    t_logp = soft_logp.float().gather(1, gather)  # (B, Ts, K) teacher frame for each student frame
    t_idx = soft_idx.long().gather(1, gather)
    t_logp = t_logp - t_logp.logsumexp(-1, keepdim=True)  # renormalised over the support
    s_logp = F.log_softmax(student_log_probs.float() / temperature, dim=-1).gather(2, t_idx)  # (B, Ts, K)
    s_logp = s_logp - s_logp.logsumexp(-1, keepdim=True)  # the same support, renormalised
    p = t_logp.exp()
    kl = torch.where(p > 0, p * (t_logp - s_logp), 0.0).sum(-1)  # (B, Ts); 0 * log 0 = 0
    valid = length_mask(student_lengths, Ts)
    return _masked_mean(kl, valid)


def distillation_loss(out: dict, batch: dict, alpha: float, temperature: float,
                      aux_weight: float = 0.0) -> tuple[Tensor, dict]:
    """(1 - alpha) * CTC + alpha * T^2 * KL, the targets read from the batch's soft-target keys.

    With auxiliary heads (`out["aux"]`, the student's per-stream classifiers), each adds aux_weight times its
    own CTC to the CTC term and aux_weight times its own KL to the same teacher targets to the KL term, so the
    stream features are taught frame by frame by the teacher too. alpha 0 is the teacher's loss
    (`teacher_loss`: main CTC + aux_weight * each auxiliary CTC).

    Returns (loss, parts for logging: "ctc", "kd", and "ctc_<stream>", "kd_<stream>" per auxiliary head).
    """
    ctc, parts = teacher_loss(out, batch, aux_weight)
    if alpha == 0:
        return ctc, parts
    missing = [k for k in SOFT_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch has no soft targets {missing}: give --soft_targets DIR or a --teacher_checkpoint")
    targets = [batch[k] for k in SOFT_KEYS]
    kl = soft_target_kl(out["log_probs"], out["lengths"], *targets, temperature)
    parts["kd"] = kl.detach()
    for name, lp in out.get("aux", {}).items():
        aux = soft_target_kl(lp, out["lengths"], *targets, temperature)
        parts[f"kd_{name}"] = aux.detach()
        kl = kl + aux_weight * aux
    loss = (1 - alpha) * ctc + alpha * temperature ** 2 * kl
    return loss, parts


@torch.no_grad()
def teacher_soft_targets(teacher: torch.nn.Module, batch: dict, temperature: float, topk: int = 0,
                         autocast=contextlib.nullcontext) -> dict:
    """Online targets: the frozen teacher (eval mode) on the same batch -> the soft-target batch keys."""
    with autocast():
        out = model_forward(teacher, batch)
    return soft_targets_from_log_probs(out["log_probs"], out["lengths"], temperature, topk)


def hint_loss(hint: Tensor, target: Tensor, lengths: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean over valid frames of the mean squared difference between the student's hint and the per-frame
    layer-normalised teacher features.

    Args:
        hint: (B, T, D) the student's hint regressor output.
        target: (B, T, D) the teacher's stream features on the same frames.
        lengths: (B,) valid frames.
        keep: (B, T) bool, frames that count besides (default: all valid ones).
    """
    if hint.shape != target.shape:
        raise ValueError(f"hint {tuple(hint.shape)} and teacher features {tuple(target.shape)} differ: "
                         "--hint_dim must be the teacher's pose stream width")
    target = F.layer_norm(target.float(), target.shape[-1:])
    err = (hint.float() - target).pow(2).mean(-1)  # (B, T)
    valid = length_mask(lengths, err.shape[1])
    if keep is not None:
        valid = valid & keep.to(valid.device)
    return _masked_mean(err, valid)


@torch.no_grad()
def teacher_stream_features(teacher: torch.nn.Module, batch: dict, stream: str = "pose",
                            autocast=contextlib.nullcontext) -> Tensor:
    """The frozen teacher's `stream` encoder alone on the batch -> (B, T', C) features (the hint targets)."""
    with autocast():
        feats, _ = teacher.encoders[stream](batch[stream], batch.get("lengths"))
    return feats


def _hand_indices(device) -> Tensor:
    """The 42 hand landmarks of the Holistic layout, left hand first."""
    return torch.tensor(POSE_PARTS["left_hand"] + POSE_PARTS["right_hand"], device=device)


@torch.no_grad()
def teacher_frame_features(teacher: torch.nn.Module, batch: dict) -> tuple[Tensor, Tensor]:
    """The frozen teacher's per-frame landmark embedding (its pose encoder's MLP, before the temporal convs)
    -> (B, T, C) features and (B, T) bool: frames where it sees at least one hand landmark (the hint's frames:
    a lost hand is visible in the RGB, and its embedding would teach the student to miss it)."""
    encoder = teacher.encoders["pose"]
    pose = batch["pose"].float()
    valid = length_mask(batch["lengths"], pose.shape[1]).to(pose.device)
    feats = encoder.mlp(normalise_landmarks(pose, encoder.indices, valid).flatten(2))  # (B, T, C)
    seen = ~pose[:, :, _hand_indices(pose.device)].isnan().any(-1).all(-1)  # (B, T): some hand landmark present
    return feats, seen & valid


def _seen_hands(pose: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, 543, 3) landmarks -> (B, T, 2, 21, 2) both hands' landmarks in the image plane (x, y; left hand
    first) and (B, T, 2) bool: valid frames where all 21 of that hand were detected."""
    B, T = pose.shape[:2]
    hands = pose[:, :, _hand_indices(pose.device)].float().view(B, T, 2, 21, 3)
    seen = ~hands.isnan().any(-1).any(-1) & length_mask(lengths, T).to(pose.device)[..., None]
    return hands[..., :2], seen


def hand_shape_targets(pose: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, 543, 3) landmarks -> (B, T, 2, 42) each hand's shape, (B, T, 2) bool where it counts.

    A hand's shape is its 21 landmarks' x, y relative to its wrist, divided by its size in the image plane
    (wrist to middle-finger knuckle); it counts on valid frames where all 21 were detected (left hand first).
    Depth is left out: on the synthetic corpus its variance in hand sizes is 8x the image plane's (14.3 against
    1.7), and the frames barely show it."""
    hands, seen = _seen_hands(pose, lengths)
    rel = hands - hands[:, :, :, :1]
    size = rel[:, :, :, 9].norm(dim=-1)  # (B, T, 2)
    keep = seen & (size > 1e-6)
    shape = torch.where(keep[..., None, None], rel / size.clamp(min=1e-6)[..., None, None], 0.0)
    return shape.flatten(3), keep


def hand_shape_loss(pred: Tensor, pose: Tensor, lengths: Tensor, huber: float = 0.0) -> Tensor:
    """Mean squared error of (B, T, 2, 42) predicted hand shapes against `hand_shape_targets`, over the hands
    that count; `huber` > 0: the Huber loss with that threshold (x2, so that it equals the squared error below
    it). A hand seen edge-on is tiny in the image plane and its shape in hand sizes huge: on the synthetic
    corpus the per-hand squared distance to the mean shape has median 0.71, 99th percentile 14.7, maximum 957."""
    target, keep = hand_shape_targets(pose, lengths)
    pred, target = pred.float(), target.to(pred.device)
    if huber > 0:
        err = 2 * F.huber_loss(pred, target, reduction="none", delta=huber).mean(-1)  # (B, T, 2)
    else:
        err = (pred - target).pow(2).mean(-1)  # (B, T, 2)
    return _masked_mean(err, keep.to(err.device))


def hand_centres(pose: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, 543, 3) landmarks -> (B, T, 2, 2) each hand's centre (the mean x, y of its 21 landmarks, left hand
    first) and (B, T, 2) bool: valid frames where all 21 were detected (elsewhere the centre is 0)."""
    hands, keep = _seen_hands(pose, lengths)
    return torch.where(keep[..., None], hands.mean(3), 0.0), keep


def hand_locate_loss(xy: Tensor, pose: Tensor, lengths: Tensor, scale: float) -> Tensor:
    """The hand locator's loss: mean over the hands that count (`hand_centres`) of |dx| + |dy| between the
    predicted (B, T, 2, 2) centres `xy` and the landmarks' centres, times `scale` (frame side / patch side)."""
    target, keep = hand_centres(pose, lengths)
    err = (xy.float() - target.to(xy.device)).abs().sum(-1) * scale  # (B, T, 2)
    return _masked_mean(err, keep.to(err.device))


def student_hint_loss(out: dict, batch: dict, teacher: torch.nn.Module | None,
                      autocast=contextlib.nullcontext) -> Tensor:
    """The hint loss of the student's regressor output: per frame ("hint_frames") against the teacher's landmark
    embedding, per output frame ("hint") against its pose stream, or per frame and hand ("hint_hands") against
    the hand shapes of the batch's landmarks (mean squared error over the hands that count)."""
    if "hint_hands" in out:
        return hand_shape_loss(out["hint_hands"].unflatten(-1, (2, -1)), batch["pose"], batch["lengths"])
    if teacher is None:
        raise ValueError("hints at the 'sequence' and 'frames' levels need a teacher (--teacher_checkpoint)")
    if "hint_frames" in out:
        target, seen = teacher_frame_features(teacher, batch)
        return hint_loss(out["hint_frames"], target.to(out["hint_frames"].device), batch["lengths"], seen)
    if "hint" in out:
        target = teacher_stream_features(teacher, batch, "pose", autocast)
        return hint_loss(out["hint"], target.to(out["hint"].device), out["lengths"])
    raise ValueError("--hint_weight needs a student with a hint regressor (--hint_dim)")


def make_kd_loss(alpha: float, temperature: float, teacher: torch.nn.Module | None = None,
                 autocast=contextlib.nullcontext, aux_weight: float = 0.0,
                 hint_teacher: torch.nn.Module | None = None, hint_weight: float = 0.0, hand_scale: float = 0.0,
                 hand_shape_weight: float = 1.0):
    """The Trainer's `loss_fn(out, batch) -> (loss, parts)`: online when a teacher is given, else offline keys;
    plus `hint_weight` times the hint loss to `hint_teacher`'s pose stream when that is given, plus, for a
    student with hand patches, the locator's loss (`hand_scale`: frame side / patch side) and `hand_shape_weight`
    times the patches' hand-shape loss."""
    def loss_fn(out: dict, batch: dict):
        if teacher is not None and alpha > 0:
            batch = {**batch, **teacher_soft_targets(teacher, batch, temperature, autocast=autocast)}
        loss, parts = distillation_loss(out, batch, alpha, temperature, aux_weight)
        if hint_weight > 0:
            hint = student_hint_loss(out, batch, hint_teacher, autocast)
            parts["hint"] = hint.detach()
            loss = loss + hint_weight * hint
        if "hand_xy" in out:
            if hand_scale <= 0 or "pose" not in batch:
                raise ValueError("a student with hand patches needs the landmarks in training batches and the "
                                 "patch scale (cslr.recipes.student sets both)")
            locate = hand_locate_loss(out["hand_xy"], batch["pose"], batch["lengths"], hand_scale)
            shape = hand_shape_loss(out["hand_shape"], batch["pose"], batch["lengths"], huber=1.0)
            parts["hand"], parts["hand_shape"] = locate.detach(), shape.detach()
            loss = loss + locate + hand_shape_weight * shape  # weight 0 keeps the graph whole (DDP)
        return loss, parts

    return loss_fn


def load_frozen_teacher(path: str | Path, vocab, device, image_size: int | None = None) -> torch.nn.Module:
    """The teacher of `best_model.pth`, frozen (eval, no grad) on `device`; its vocabulary must be the data's.

    `image_size`: the crop the teacher will be shown (online targets); an RGB teacher trained on another crop
    size is refused, since it would see frames unlike its training (offline targets are made at its own size).
    Kept outside `accelerator.prepare`: DeepSpeed takes one model per prepare, and the teacher needs no
    optimizer, gradient sync or sharding.
    """
    teacher, teacher_vocab, ck = model_from_checkpoint(path)
    if list(teacher_vocab.glosses) != list(vocab.glosses):
        raise ValueError(f"{path}: the teacher's vocabulary ({len(teacher_vocab)} classes) is not the data's "
                         f"({len(vocab)} classes): distil on the corpus the teacher was trained on")
    trained = ck.get("config", {}).get("data", {}).get("image_size")
    if image_size is not None and "rgb" in teacher.cfg.streams and trained and int(trained) != image_size:
        raise ValueError(f"{path}: the teacher was trained on {trained}x{trained} crops and the student reads "
                         f"{image_size}x{image_size}; online targets would show the teacher frames unlike its "
                         f"training: write offline targets (launch/soft_targets.py, at the teacher's size) and "
                         f"give --soft_targets DIR, or train the student at --image_size {trained}")
    teacher.requires_grad_(False)
    return teacher.eval().to(device)
