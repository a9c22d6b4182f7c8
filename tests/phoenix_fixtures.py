"""Fixture trees in the official PHOENIX on-disk layouts, with small generated PNG frames.

Used by tests/test_phoenix.py; also builds a benchmark tree:

    python tests/phoenix_fixtures.py /tmp/phoenix-bench --videos 50 --frames 100
    python launch/prepare.py phoenix2014 --root /tmp/phoenix-bench --out /tmp/phoenix-bench-out --workers 2

Frame i of a test video is a flat grey of value `frame_value(i)`, so the order of frames can be checked after
JPEG compression (a flat 8x8 block survives JPEG within a few levels).
"""

from __future__ import annotations

import argparse
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# kind -> (corpus folder, annotation file template, header)
LAYOUTS = {
    "phoenix2014": ("phoenix-2014-multisigner", "{split}.corpus.csv", "id|folder|signer|annotation"),
    "phoenix2014-si5": ("phoenix-2014-signerindependent-SI5", "{split}.SI5.corpus.csv",
                        "id|folder|signer|annotation"),
    "phoenix2014T": ("PHOENIX-2014-T", "PHOENIX-2014-T.{split}.corpus.csv",
                     "name|video|start|end|speaker|orth|translation"),
}
RELEASE = {"phoenix2014": "phoenix2014-release", "phoenix2014-si5": "phoenix2014-release",
           "phoenix2014T": "PHOENIX-2014-T-release-v3"}
SIZE = (26, 21)  # (H, W): PHOENIX's 260x210 / 10


@dataclass
class Video:
    id: str
    annotation: str  # raw, as in the CSV (double spaces and all)
    signer: str = "Signer01"
    num_frames: int = 6
    naming: str = "padded"  # padded: images0001.png, unpadded: images1.png, phoenix: <id>.avi_pid0_fn000000-0.png
    folder: str = "ok"  # ok | missing | empty
    translation: str = "und nun die wettervorhersage"


def frame_value(i: int) -> int:
    return 10 + 20 * (i % 12)


def frame_name(video: Video, i: int) -> str:
    if video.naming == "padded":
        return f"images{i + 1:04d}.png"
    if video.naming == "unpadded":
        return f"images{i + 1}.png"
    if video.naming == "phoenix":
        return f"{video.id}.avi_pid0_fn{i:06d}-0.png"
    raise ValueError(video.naming)


def frame_image(i: int, size=SIZE, textured: bool = False, rng=None) -> Image.Image:
    h, w = size
    if not textured:
        return Image.new("RGB", (w, h), (frame_value(i),) * 3)
    # Smooth random content plus noise: compresses like a camera frame, unlike a flat colour.
    low = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-12, 13, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def csv_line(kind: str, video: Video) -> str:
    if kind == "phoenix2014T":
        return f"{video.id}|{video.id}/1/*.png|-1|-1|{video.signer}|{video.annotation}|{video.translation}"
    return f"{video.id}|{video.id}/1/*.png|{video.signer}|{video.annotation}"


def frame_folder(kind: str, split_dir: Path, video: Video) -> Path:
    # 2014: <split>/<id>/1/*.png; 2014-T: <split>/<name>/*.png
    return split_dir / video.id if kind == "phoenix2014T" else split_dir / video.id / "1"


def build_tree(release: Path, kind: str, splits: dict[str, list[Video | str]], size=SIZE,
               textured: bool = False) -> Path:
    """Write a corpus in the official layout under `release`; returns the corpus folder.

    A `str` entry of a split is written to its CSV verbatim (a malformed row); `Video.folder` "missing" writes
    the CSV row only, "empty" an empty frame folder.
    """
    folder, csv_name, header = LAYOUTS[kind]
    corpus = release / folder
    manual = corpus / "annotations" / "manual"
    manual.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, videos in splits.items():
        lines = [header] + [v if isinstance(v, str) else csv_line(kind, v) for v in videos]
        (manual / csv_name.format(split=split)).write_text("\n".join(lines) + "\n", "utf-8")
        split_dir = corpus / "features" / "fullFrame-210x260px" / split
        for v in videos:
            if isinstance(v, str) or v.folder == "missing":
                continue
            d = frame_folder(kind, split_dir, v)
            d.mkdir(parents=True, exist_ok=True)
            if v.folder == "empty":
                continue
            for i in range(v.num_frames):
                frame_image(i, size, textured, rng).save(d / frame_name(v, i), compress_level=1)
    return corpus


def write_poses(pose_dir: Path, split: str, videos: list[Video], num_landmarks: int = 543, channels: int = 3,
                extra_frames: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Random (T, K, C) landmark files `<pose_dir>/<split>/<id>.npy` (T off by `extra_frames`), with NaNs."""
    rng = np.random.default_rng(seed)
    out = {}
    (pose_dir / split).mkdir(parents=True, exist_ok=True)
    for v in videos:
        pose = rng.random((v.num_frames + extra_frames, num_landmarks, channels), dtype=np.float32)
        pose[0, 0, :] = np.nan  # a landmark not detected
        np.save(pose_dir / split / f"{v.id}.npy", pose)
        out[v.id] = pose
    return out


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """A shard -> {key: {member extension: bytes}} in tar order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def decode_gray(jpeg: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(bytes(jpeg))).convert("L"), dtype=np.float32).mean())


def main() -> None:
    p = argparse.ArgumentParser(description="Build a PHOENIX-2014 benchmark tree (textured frames).")
    p.add_argument("release")
    p.add_argument("--videos", type=int, default=50)
    p.add_argument("--frames", type=int, default=100)
    a = p.parse_args()
    videos = [Video(f"bench-{i}", "A B C", num_frames=a.frames) for i in range(a.videos)]
    build_tree(Path(a.release), "phoenix2014", {"train": videos, "dev": [], "test": []}, size=(260, 210),
               textured=True)


if __name__ == "__main__":
    main()
