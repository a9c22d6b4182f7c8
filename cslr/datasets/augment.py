"""Video + pose augmentation for the streaming pipeline, vectorised over the frames of one video.

Every random choice of a video is drawn once, up front, by `draw_params` from a generator seeded by
(seed, epoch, slot, cycle, key) (see `cslr.datasets.pipeline`), so that the result of a sample does not
depend on the path it took (worker, batch, resumed or not). The pipeline draws the parameters before a
video is decoded: the temporal length after rescaling is known early, which lets it bucket and check the
CTC length on undecoded samples.

Geometry. The crop is a square of side `sqrt(area) * min(H, W)` (area drawn from `crop_scale`; relative to
the largest square that fits, so the output is never distorted), at a uniformly random position in train
and at the centre with the mean area of `crop_scale` in eval, resized to `size x size` with one antialiased
`F.interpolate` per video. Landmarks (x, y normalised to the full frame, z relative) go through the same
crop, so that a landmark stays on the pixel it marked: `x' = (x * W - x0) / side`, `y' = (y * H - y0) / side`.
Landmarks that fall outside the crop keep their (out of [0, 1]) coordinates; NaN (not detected) stays NaN.

Train only, on top: temporal rescale to `round(T * U(1 - s, 1 + s))` frames (nearest frame, the same
indices for RGB and pose); pose jitter, i.e. a small global affine of (x, y) about the centre (entries of
`A - I` and of the shift drawn from U(-2j, 2j)) plus per-landmark Gaussian noise of std j, applied to the
pose stream only (the pixels are not warped); horizontal flip (off by default because it swaps the
dominant hand), which mirrors x and swaps the left/right landmarks of the MediaPipe Holistic layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .schema import LANDMARK_SLICES, NUM_LANDMARKS

# BlazePose (MediaPipe pose) left/right landmark pairs, mirrored by a horizontal flip.
_POSE_LR_PAIRS = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18),
                  (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32))


@dataclass
class AugmentParams:
    """The random choices for one video (identity in eval)."""

    num_frames_out: int
    crop_area: float                 # fraction of the largest square that fits, in area
    crop_pos: tuple[float, float]    # (v, u) in [0, 1]: where the square sits in the free room (y, x)
    flip: bool = False
    affine: np.ndarray | None = None  # (2, 3) on normalised (x, y) about the centre; None = identity
    noise_std: float = 0.0
    noise_seed: int = 0


def draw_params(rng: np.random.Generator, num_frames: int, *, train: bool, crop_scale=(0.7, 1.0),
                temporal_scale: float = 0.2, pose_jitter: float = 0.01, hflip: bool = False) -> AugmentParams:
    """Draw a video's augmentation (train) or return the deterministic eval transform.

    Always consumes the same number of draws in train whatever the flags, so that switching one
    augmentation off does not change the others.
    """
    lo, hi = crop_scale
    if not train:
        return AugmentParams(num_frames, (lo + hi) / 2, (0.5, 0.5))
    factor = rng.uniform(1 - temporal_scale, 1 + temporal_scale)
    area = rng.uniform(lo, hi)
    pos = (float(rng.uniform()), float(rng.uniform()))
    flip = bool(rng.uniform() < 0.5)
    a = rng.uniform(-2, 2, size=(2, 3)) * pose_jitter
    noise_seed = int(rng.integers(2**62))
    return AugmentParams(
        num_frames_out=max(1, round(num_frames * factor)),
        crop_area=float(area),
        crop_pos=pos,
        flip=flip and hflip,
        affine=(np.eye(2, 3) + a) if pose_jitter > 0 else None,
        noise_std=pose_jitter,
        noise_seed=noise_seed,
    )


def temporal_indices(num_frames: int, num_frames_out: int) -> torch.Tensor:
    """Nearest-frame indices resampling `num_frames` frames to `num_frames_out` (centres aligned)."""
    idx = ((torch.arange(num_frames_out, dtype=torch.float64) + 0.5) * num_frames / num_frames_out).floor()
    return idx.clamp_(0, num_frames - 1).long()


def crop_box(height: int, width: int, p: AugmentParams) -> tuple[int, int, int]:
    """(y0, x0, side) in pixels of the square crop of a height x width frame."""
    side = max(1, min(height, width, round(math.sqrt(p.crop_area) * min(height, width))))
    v, u = p.crop_pos
    return round(v * (height - side)), round(u * (width - side)), side


def crop_resize(frames: torch.Tensor, box: tuple[int, int, int], size: int, flip: bool = False) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, size, size) uint8: square crop, antialiased bilinear resize, flip."""
    y0, x0, side = box
    x = frames[:, :, y0:y0 + side, x0:x0 + side]
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.flip(-1) if flip else x


def crop_resize_hwc(frames: list[torch.Tensor], box: tuple[int, int, int], size: int,
                    flip: bool = False) -> torch.Tensor:
    """U x (H, W, 3) uint8 frames (a JPEG decoder's layout) -> (U, 3, size, size) uint8, as `crop_resize`.

    Only the crop windows are copied (one stack), into (U, side, side, 3) memory, i.e. channels_last: the
    layout of torch's vectorised uint8 antialiased kernel, twice as fast as on contiguous (U, 3, H, W).
    The result is channels_last in memory; `.contiguous()` (or a copy into a batch) gives the usual layout.
    """
    y0, x0, side = box
    clip = torch.stack([f[y0:y0 + side, x0:x0 + side] for f in frames]).permute(0, 3, 1, 2)  # (U, 3, side, side)
    return crop_resize(clip, (0, 0, side), size, flip)


def _mirror_landmarks(pose: torch.Tensor) -> torch.Tensor:
    """Swap the left and right landmarks of a full Holistic layout (K = 543); other layouts unchanged."""
    if pose.shape[1] != NUM_LANDMARKS:
        return pose
    perm = torch.arange(NUM_LANDMARKS)
    for a, b in _POSE_LR_PAIRS:
        perm[a], perm[b] = b, a
    left, right = LANDMARK_SLICES["left_hand"], LANDMARK_SLICES["right_hand"]
    perm[left], perm[right] = torch.arange(right.start, right.stop), torch.arange(left.start, left.stop)
    # The face mesh is not mirrored point by point (its symmetry table is not part of the schema).
    return pose[:, perm]


def transform_pose(pose: torch.Tensor, height: int, width: int, box: tuple[int, int, int],
                   p: AugmentParams) -> torch.Tensor:
    """(T, K, 3) float32 landmarks -> the same landmarks in the crop's normalised coordinates (+ jitter)."""
    y0, x0, side = box
    out = pose.clone()
    out[..., 0] = (pose[..., 0] * width - x0) / side
    out[..., 1] = (pose[..., 1] * height - y0) / side
    if p.flip:
        out[..., 0] = 1 - out[..., 0]
        out = _mirror_landmarks(out)
    if p.affine is not None:
        a = torch.as_tensor(p.affine, dtype=out.dtype)  # (2, 3)
        xy = out[..., :2] - 0.5
        out[..., :2] = xy @ a[:, :2].T + a[:, 2] + 0.5
    if p.noise_std > 0:
        g = torch.Generator().manual_seed(p.noise_seed)
        out[..., :2] += torch.randn(out[..., :2].shape, generator=g) * p.noise_std
    return out


def pose_keyframes(num_frames: int, stride: int) -> list[int]:
    """The frames whose landmarks are extracted under `--pose_stride K`: every K-th from the first, and the last."""
    if stride < 1:
        raise ValueError(f"pose stride must be >= 1, got {stride}")
    return sorted(set(range(0, num_frames, stride)) | {num_frames - 1}) if num_frames > 0 else []


def interpolate_keyframes(keys: list[int], values: np.ndarray, num_frames: int) -> np.ndarray:
    """Landmarks known at the frames `keys` (sorted, first 0 and last num_frames - 1; `values` (len(keys), ...))
    -> every frame (num_frames, ...), linear between neighbouring keys; NaN (undetected) where either key is NaN."""
    values = np.asarray(values, dtype=np.float32)
    out = np.empty((num_frames,) + values.shape[1:], dtype=np.float32)
    for j, (a, b) in enumerate(zip(keys, keys[1:] + [keys[-1] + 1])):
        out[a] = values[j]
        if b - a > 1:
            w = (np.arange(a + 1, b, dtype=np.float32) - a) / (b - a)
            w = w.reshape((-1,) + (1,) * (values.ndim - 1))
            out[a + 1:b] = (1 - w) * values[j] + w * values[j + 1]
    return out


def stride_pose(pose: torch.Tensor, lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """A batch's landmarks (B, T, K, 3) as `--pose_stride` would give them: each video's keyframes kept, the
    frames between interpolated (linear interpolation commutes with the per-video affine of `transform_pose`, so
    applying it after the crop equals extracting on the full frame and transforming). Padding stays as it is."""
    if stride == 1:
        return pose
    out = pose.clone()
    for i, n in enumerate(lengths.tolist()):
        keys = pose_keyframes(n, stride)
        out[i, :n] = torch.from_numpy(interpolate_keyframes(keys, pose[i, keys].float().cpu().numpy(), n)).to(pose)
    return out
