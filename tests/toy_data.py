"""Tiny prepared datasets (shards + vocab.txt + manifest.json) for tests, written in a temporary folder.

    root = make_toy_dataset(tmp_path, n_shards=2, videos_per_shard=4)            # train split only
    root = make_toy_dataset(tmp_path, 2, 4, splits={"train": 2, "dev": 1})      # shards per split
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg

from cslr.datasets.schema import LANDMARK_SLICES, NUM_LANDMARKS, POSE_LAYOUT, VideoSample
from cslr.datasets.vocab import Vocabulary
from cslr.io import atomic_write_json
from cslr.datasets.writer import MANIFEST, VOCAB, shard_name, write_shard


def encode_frames(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    """(T, H, W, 3) uint8 -> JPEG byte strings."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return [encode_jpeg(torch.from_numpy(f).permute(2, 0, 1).contiguous(), quality=quality).numpy().tobytes()
                for f in frames]


def toy_sample(key: str, rng: np.random.Generator, *, num_frames: int, size: int = 16, split: str = "train",
               glosses: str | None = None, num_glosses: int = 6, signer: str = "S1") -> VideoSample:
    """A video of random frames with random landmarks; the left hand is missing (NaN) in some frames."""
    frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)
    pose = rng.uniform(0.05, 0.95, size=(num_frames, NUM_LANDMARKS, 3)).astype(np.float32)
    pose[rng.uniform(size=num_frames) < 0.3, LANDMARK_SLICES["left_hand"]] = np.nan
    if glosses is None:
        glosses = " ".join(f"G{i}" for i in rng.integers(0, num_glosses, size=rng.integers(1, 3)))
    meta = {"signer": signer, "split": split, "fps": 25, "num_frames": num_frames, "corpus": "toy",
            "orig_size": [size, size], "frame_size": [size, size]}
    return VideoSample(key=key, gloss=glosses, meta=meta, jpegs=encode_frames(frames), pose=pose)


def write_dataset(root: str | Path, shards: dict[str, list[list]], *, size: int = 16,
                  vocab: list[str] | None = None) -> Path:
    """Write {split: [[samples of shard 0], [samples of shard 1], ...]} + vocab.txt + manifest.json.

    Samples are VideoSample or raw member dicts (for broken samples). The vocabulary defaults to the
    glosses of the train split's VideoSamples.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if vocab is None:
        vocab = sorted({g for shard in shards.get("train", []) for s in shard
                        if isinstance(s, VideoSample) for g in s.gloss.split()})
    Vocabulary(vocab).save(root / VOCAB)
    splits = {}
    for split, split_shards in shards.items():
        entries = [write_shard(root / shard_name(split, i), samples) for i, samples in enumerate(split_shards)]
        splits[split] = {"num_samples": sum(e["count"] for e in entries),
                         "num_frames": sum(e["frames"] for e in entries), "shards": entries}
    manifest = {"format": "cslr-shards/1", "corpus": "toy", "protocol": "phoenix2014", "fps": 25,
                "frame_size": [size, size], "modalities": ["rgb", "pose"],
                "pose_layout": [list(x) for x in POSE_LAYOUT], "vocab_size": len(vocab),
                "splits": splits, "skipped": {s: [] for s in shards}, "config": {"generator": "tests/toy_data.py"}}
    atomic_write_json(root / MANIFEST, manifest)
    return root


def make_toy_dataset(tmp: str | Path, n_shards: int, videos_per_shard: int, *, frames: tuple[int, int] = (6, 10),
                     size: int = 16, splits: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A toy dataset: `n_shards` train shards of `videos_per_shard` videos (or `splits` = {split: shards}),
    each video with a frame count drawn from [frames[0], frames[1]] and 1 or 2 glosses out of G0..G5."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": n_shards}
    shards = {
        split: [[toy_sample(f"{split}_{s:02d}_{v:03d}", rng, num_frames=int(rng.integers(frames[0], frames[1] + 1)),
                            size=size, split=split, signer=f"S{v % 3}")
                 for v in range(videos_per_shard)] for s in range(n)]
        for split, n in splits.items()
    }
    return write_dataset(tmp, shards, size=size)
