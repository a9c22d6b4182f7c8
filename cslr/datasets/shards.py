"""Reading shards and checking their samples without decoding: the raw samples of a tar shard in file order,
and the cheap checks (npy headers, JPEG framing, CTC length) that the loader, soft-target generation and the
sidecar reader share. A sample that fails a check raises `BadSample` (reason, detail)."""

from __future__ import annotations

import hashlib
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


class ShardChanged(ValueError):
    """A shard that is not the file `prepare` wrote (size or sha256 differs from the manifest): never skipped like
    a bad sample, since what was already read from it is not the data the run was meant to see."""


class _HashingReader:
    """A binary file wrapper that hashes every byte read through it."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        return b


def iter_shard(path: Path, sha256: str | None = None) -> Iterator[dict]:
    """The raw samples of one tar shard in file order: dicts of member name -> bytes, plus `__key__`.

    With `sha256` (the manifest's), the bytes are hashed as they stream (~1.2 ms per MB here, within the loader's
    run-to-run noise; README) and ShardChanged is raised after the last sample if the file differs.
    Raises (OSError, tarfile.TarError, ValueError) on a shard that cannot be read.
    """
    with open(path, "rb") as raw:
        f = _HashingReader(raw) if sha256 else raw
        files = ({**m, "__url__": path.name} for m in tar_file_iterator(f))
        yield from group_by_keys(files)
        if sha256:
            while f.read(1 << 20):  # the tar's end blocks
                pass
            if f.h.hexdigest() != sha256:
                raise ShardChanged(f"{path}: sha256 differs from the manifest: the shard changed after prepare "
                                   "(another shard copied over it?); re-run launch/prepare.py")


def check_shard_files(data_dir: Path, entries: list[dict], require: bool) -> dict[str, str]:
    """Cheap start-up check of a split's shards against the manifest entries (existence, size) -> name -> sha256.
    With `require` (train) a missing shard raises FileNotFoundError and a size that differs ShardChanged; otherwise
    (eval) both are left to the loader, which counts an unreadable shard and raises ShardChanged on a sha256 that
    differs after a shard read completely."""
    missing = []
    for e in entries:
        path = data_dir / e["name"]
        if not path.is_file():
            missing.append(e["name"])
        elif require and "bytes" in e and path.stat().st_size != e["bytes"]:
            raise ShardChanged(f"{path}: {path.stat().st_size} bytes, {data_dir / 'manifest.json'} says {e['bytes']}: "
                               "the shard changed after prepare; re-run launch/prepare.py")
    if missing and require:
        raise FileNotFoundError(f"{data_dir}: {len(missing)} of {len(entries)} shards listed in manifest.json are "
                                f"missing: {missing[:5]}")
    return {e["name"]: e["sha256"] for e in entries if e.get("sha256")}


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
    if dtype.kind != "f" or dtype.itemsize > 8:  # the schema's float16 (float32/64 accepted); never ints or objects
        raise BadSample("corrupt_member", f"{POSE}: dtype {dtype}, expected float16 (or float32)")
    if len(data) - f.tell() != expected:
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
