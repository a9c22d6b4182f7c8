"""Reading shards and checking their samples without decoding: the raw samples of a tar shard in file order,
and the cheap checks (npy headers, JPEG framing, CTC length) that the loader, soft-target generation and the
sidecar reader share. A sample that fails a check raises `BadSample` (reason, detail)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterator

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator

from .schema import POSE, RGB, SchemaError, unpack_jpegs


class BadSample(Exception):
    """A sample that cannot be used: `reason` is a short category, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def iter_shard(path: Path) -> Iterator[dict]:
    """The raw samples of one tar shard in file order: dicts of member name -> bytes, plus `__key__`.

    Raises (OSError, tarfile.TarError, ValueError) on a shard that cannot be read.
    """
    with open(path, "rb") as f:
        files = ({**m, "__url__": path.name} for m in tar_file_iterator(f))
        yield from group_by_keys(files)


def npy_shape(data: bytes) -> tuple:
    """Shape of a `.npy` member from its header, checking that the data that follows is complete."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except Exception as e:  # numpy raises ValueError/EOFError on a bad header
        raise BadSample("corrupt_member", f"{POSE}: unreadable header ({e})") from e
    expected = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or len(data) - f.tell() != expected:
        raise BadSample("corrupt_member", f"{POSE}: {len(data) - f.tell()} data bytes, header says {expected} ({dtype})")
    return shape


def check_jpegs(data: bytes, num_frames: int) -> None:
    """Container structure, frame count, and JPEG start/end markers (a truncated JPEG lacks its end)."""
    try:
        frames = unpack_jpegs(data)
    except SchemaError as e:
        raise BadSample("corrupt_member", str(e)) from e
    if len(frames) != num_frames:
        raise BadSample("frame_count_mismatch", f"{RGB} has {len(frames)} frames, meta.json says {num_frames}")
    for i, f in enumerate(frames):
        if bytes(f[:2]) != b"\xff\xd8" or b"\xff\xd9" not in bytes(f[-64:]):
            raise BadSample("corrupt_member", f"{RGB}: frame {i} is not a complete JPEG stream")


def ctc_min_length(ids: list[int]) -> int:
    """Frames CTC needs for a label sequence: one per label plus a blank between adjacent repeats."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
