"""Atomic, deterministic shard writing and the dataset manifest.

A shard is written to a temporary name in the same folder and renamed into place, so a shard file that
exists is complete: converters resume by skipping shards that exist. Tar headers carry no time stamps
or owners, so the same samples give byte-identical shards (and equal checksums).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterable

from cslr.io import atomic_write_bytes

from .schema import META, VideoSample

MANIFEST = "manifest.json"
VOCAB = "vocab.txt"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(members_list: Iterable[dict]) -> tuple[bytes, int, int]:
    """Samples' member dicts -> (tar bytes, sample count, total frames)."""
    buf = io.BytesIO()
    count = frames = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for members in members_list:
            key = members["__key__"]
            for ext, data in members.items():
                if ext == "__key__":
                    continue
                _add_member(tar, f"{key}.{ext}", data)
            count += 1
            if META in members:  # sidecar shards (soft targets) carry no meta.json
                frames += json.loads(members[META])["num_frames"]
    return buf.getvalue(), count, frames


def write_shard(path: str | os.PathLike, samples: Iterable[VideoSample | dict]) -> dict:
    """Write samples (VideoSample or member dicts) to one tar shard atomically.

    Returns the shard's manifest entry: name, count, frames, bytes, sha256, keys.
    """
    path = Path(path)
    keys: list[str] = []

    def members_iter():
        for s in samples:
            m = s.to_members() if isinstance(s, VideoSample) else s
            keys.append(m["__key__"])
            yield m

    data, count, frames = tar_bytes(members_iter())
    atomic_write_bytes(path, data)
    return {
        "name": path.name,
        "count": count,
        "frames": frames,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "keys": keys,
    }


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """Read `manifest.json` of a prepared dataset folder, with a clear error naming the problem."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist (prepare it with launch/prepare.py)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest.json; is {data_dir} a folder written by launch/prepare.py?")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if "splits" not in manifest:
        raise ValueError(f"{path}: no 'splits' entry")
    return manifest
