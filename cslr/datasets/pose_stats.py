"""Landmark statistics of MediaPipe Holistic pose arrays: how often each hand is missed, how fast the wrists move,
how spread the hands are and how much the body landmarks jitter, in shoulder widths so that frame size and
distance to the camera drop out. Used to calibrate the synthetic corpus against real landmarks
(`tests/test_synthetic_realism.py`), and to look at your own extracted landmarks:

    python -m cslr.datasets.pose_stats POSE_DIR/dev --frame-size 260 210     # .npy / .pose files, or folders of them
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .posefile import load_landmarks
from .schema import LANDMARK_SLICES

HANDS = (("left", 15, "left_hand"), ("right", 16, "right_hand"))  # the signer's own sides; 15 / 16 pose wrists
SHOULDERS = (11, 12)
UP = 0.8  # a wrist above this normalised image height counts as "up" (signing), below as low (resting)


def _per_video(pose: np.ndarray, frame_size: tuple) -> dict:
    """Sums and counts of one (T, 543, >=2) pose array; merged over videos by `landmark_statistics`."""
    p = np.asarray(pose, np.float32)[..., :2]
    h, w = frame_size
    px = p * np.array((w, h), np.float32)  # pixels, so that x and y distances compare
    sw = np.linalg.norm(px[:, SHOULDERS[0]] - px[:, SHOULDERS[1]], axis=-1)  # (T,) shoulder width
    sw = np.where(sw > 0, sw, np.nan)
    out = {"frames": len(p)}
    for side, wrist, part in HANDS:
        sl = LANDMARK_SLICES[part]
        missing = np.isnan(p[:, sl]).all((1, 2))
        up = p[:, wrist, 1] < UP
        hand = px[:, sl]
        spread = np.linalg.norm(hand - hand.mean(1, keepdims=True), axis=-1).mean(1) / sw  # NaN where missing
        speed = np.linalg.norm(np.diff(px[:, wrist], axis=0), axis=-1) / sw[1:]
        out.update({
            f"{side}_missing": missing.sum(), f"{side}_up": up.sum(), f"{side}_missing_up": (missing & up).sum(),
            f"{side}_speed_sum": np.nansum(speed), f"{side}_speed_n": np.isfinite(speed).sum(),
            f"{side}_spread_sum": np.nansum(spread), f"{side}_spread_n": np.isfinite(spread).sum(),
        })
    body = np.stack([px[:, i] for i in (0, *SHOULDERS)], 1)  # nose, shoulders (T, 3, 2)
    jitter = np.linalg.norm(np.diff(body, 2, axis=0), axis=-1) / sw[2:, None]
    out["jitter"] = list(jitter[np.isfinite(jitter)].ravel())
    return out


def landmark_statistics(poses, frame_size: tuple) -> dict:
    """Statistics over pose arrays (T, 543, 2|3) of frames `frame_size` (H, W), frame-weighted over videos.

    Returns: frames, videos; per hand (left / right, the signer's): `*_missing` (share of frames with the hand
    undetected), `*_missing_up` (the same among frames with the wrist up, signing), `*_wrist_speed` (pose-model
    wrist, shoulder widths per frame), `*_spread` (mean distance of the hand's points from their centre, shoulder
    widths); `body_jitter` (median second difference of nose and shoulders, shoulder widths per frame^2).
    """
    parts = [_per_video(p, frame_size) for p in poses]
    if not parts:
        raise ValueError("landmark_statistics: no pose arrays given")
    total = lambda k: float(sum(np.sum(x[k]) for x in parts))  # noqa: E731
    frames = total("frames")
    stats = {"videos": len(parts), "frames": int(frames)}
    for side, _, _ in HANDS:
        stats[f"{side}_missing"] = total(f"{side}_missing") / frames
        stats[f"{side}_missing_up"] = total(f"{side}_missing_up") / max(total(f"{side}_up"), 1.0)
        stats[f"{side}_wrist_speed"] = total(f"{side}_speed_sum") / max(total(f"{side}_speed_n"), 1.0)
        stats[f"{side}_spread"] = total(f"{side}_spread_sum") / max(total(f"{side}_spread_n"), 1.0)
    jitter = [j for x in parts for j in x["jitter"]]
    stats["body_jitter"] = float(np.median(jitter)) if jitter else float("nan")
    return stats


def _files(paths: list) -> list:
    out = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.suffix in (".npy", ".pose")) if p.is_dir() else [p]
    return out


def main(argv: list | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("paths", nargs="+", help=".npy / .pose files, or folders searched for them")
    ap.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), required=True,
                    help="the frames' height and width (x, y are normalised to them)")
    args = ap.parse_args(argv)
    files = _files(args.paths)
    if not files:
        raise SystemExit(f"pose_stats: no .npy or .pose files under {args.paths}")
    stats = landmark_statistics((load_landmarks(f) for f in files), tuple(args.frame_size))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}, indent=1))
    return stats


if __name__ == "__main__":
    main()
