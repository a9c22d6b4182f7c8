"""Plain file I/O at the bottom of the package (no torch): atomic writes, JSON records, hashes.

A file written here exists complete or not at all (temporary name in the same folder, fsync, rename), so
converters and generators resume by skipping the files that exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json_record(path: str | os.PathLike) -> dict | None:
    """A resume record or manifest left by an earlier run, or None where it is missing, unreadable or torn."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def cache_dir() -> Path:
    """Where prepared built-in corpora and benchmark artefacts are kept: $CSLR_CACHE, else ~/.cache/cslr."""
    return Path(os.environ.get("CSLR_CACHE", Path.home() / ".cache" / "cslr"))
