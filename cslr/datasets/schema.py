"""The shard schema: one WebDataset sample per video.

| member      | content                                                                         |
| ----------- | ------------------------------------------------------------------------------- |
| `__key__`   | the video id (PHOENIX `id`); no dots (WebDataset splits member names at a dot)  |
| `gloss.txt` | the gloss sequence as in the corpus, UTF-8, single spaces                       |
| `meta.json` | signer, split, fps, num_frames, corpus, orig_size [H, W], frame_size [H, W], ... |
| `pose.npy`  | float16 (T, 543, 3) MediaPipe Holistic order; NaN = landmark not detected        |
| `rgb.jpgs`  | the T frames as JPEG streams in one member (format below)                        |

`rgb.jpgs` packs a video's JPEG frames so that a video is one tar member, not T of them:

    b"JPGS" | uint32 little-endian T | T x uint32 little-endian byte lengths | the T JPEG streams

Nothing here unpickles: `.npy` members are read with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np

GLOSS = "gloss.txt"
META = "meta.json"
POSE = "pose.npy"
RGB = "rgb.jpgs"
REQUIRED_MEMBERS = (GLOSS, META)

# MediaPipe Holistic landmark layout, in order: (name, count).
POSE_LAYOUT = (("pose", 33), ("face", 468), ("left_hand", 21), ("right_hand", 21))
NUM_LANDMARKS = sum(n for _, n in POSE_LAYOUT)  # 543
LANDMARK_SLICES = {}
_start = 0
for _name, _n in POSE_LAYOUT:
    LANDMARK_SLICES[_name] = slice(_start, _start + _n)
    _start += _n
del _start, _name, _n

# MediaPipe pose (BlazePose) indices used by the encoders and the synthetic skeleton.
POSE_NOSE = 0
POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER = 11, 12
POSE_LEFT_ELBOW, POSE_RIGHT_ELBOW = 13, 14
POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16
POSE_LEFT_HIP, POSE_RIGHT_HIP = 23, 24
UPPER_BODY = tuple(range(0, 25))  # face points, shoulders, arms, hands' pose points, hips

# Face-mesh indices of the outer and inner lips (MediaPipe FACEMESH_LIPS), for a "mouth" subset.
MOUTH = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
    267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)

JPGS_MAGIC = b"JPGS"


class SchemaError(ValueError):
    """A sample or member that does not follow the shard schema."""


def pack_jpegs(frames: list[bytes]) -> bytes:
    """Pack JPEG byte strings into one `rgb.jpgs` member."""
    header = JPGS_MAGIC + struct.pack("<I", len(frames)) + struct.pack(f"<{len(frames)}I", *map(len, frames))
    return header + b"".join(frames)


def unpack_jpegs(data: bytes) -> list[memoryview]:
    """Split an `rgb.jpgs` member into its JPEG streams (zero-copy views). Raises SchemaError."""
    if len(data) < 8 or data[:4] != JPGS_MAGIC:
        raise SchemaError("rgb.jpgs: bad magic (not a JPGS container)")
    (n,) = struct.unpack_from("<I", data, 4)
    end_header = 8 + 4 * n
    if len(data) < end_header:
        raise SchemaError(f"rgb.jpgs: truncated header ({len(data)} bytes for {n} frames)")
    sizes = struct.unpack_from(f"<{n}I", data, 8)
    if end_header + sum(sizes) != len(data):
        raise SchemaError(f"rgb.jpgs: {len(data) - end_header} data bytes, header says {sum(sizes)} (truncated?)")
    view = memoryview(data)
    out, pos = [], end_header
    for s in sizes:
        out.append(view[pos:pos + s])
        pos += s
    return out


def encode_pose(pose: np.ndarray) -> bytes:
    """(T, K, C) landmarks -> `.npy` bytes in float16."""
    if pose.ndim != 3:
        raise SchemaError(f"pose must be (T, K, C), got shape {pose.shape}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pose, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()


def decode_pose(data: bytes) -> np.ndarray:
    """`.npy` bytes -> (T, K, C) float16 array. Never unpickles. Raises SchemaError."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/EOFError/OSError on bad bytes
        raise SchemaError(f"pose.npy: unreadable ({e})") from e
    if arr.ndim != 3:
        raise SchemaError(f"pose.npy: expected (T, K, C), got shape {arr.shape}")
    return arr


@dataclass
class VideoSample:
    """One video, as written to a shard (the writer's input, the reader's raw output)."""

    key: str
    gloss: str
    meta: dict
    jpegs: list[bytes] | None = None
    pose: np.ndarray | None = None

    def to_members(self) -> dict:
        if "." in self.key or "/" in self.key or not self.key:
            raise SchemaError(f"sample key {self.key!r}: must be non-empty without '.' or '/'")
        gloss = " ".join(self.gloss.split())
        meta = dict(self.meta)
        members = {"__key__": self.key, GLOSS: gloss.encode("utf-8")}
        if self.jpegs is not None:
            members[RGB] = pack_jpegs(self.jpegs)
        if self.pose is not None:
            members[POSE] = encode_pose(self.pose)
        meta["num_frames"] = int(meta.get("num_frames", len(self.jpegs) if self.jpegs is not None else len(self.pose)))
        members[META] = json.dumps(meta, sort_keys=True).encode("utf-8")
        return members
