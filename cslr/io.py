"""Plain file I/O at the bottom of the package (no torch): atomic writes, JSON records, hashes, progress output.

A file written here exists complete or not at all (temporary name in the same folder, fsync, rename), so
converters and generators resume by skipping the files that exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm


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


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """A matplotlib figure laid out, written to `path` atomically (a reader never sees half a PNG) and closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


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


# --------------------------------------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of `total` units for a person or for a log file, one implementation for every long loop.

    On a terminal: a tqdm bar. Elsewhere (Slurm's slurm-*.out, a pipe, a file): a plain line, never a carriage
    return, every `every_s` seconds or every `every_n` units (0: that trigger off), whichever comes first, and at
    the end (`final`; or when a line was already printed):

        epoch 1/30: 120/400 batches (30%), 2.41 batches/s, elapsed 0:00:50, eta 0:01:56, loss 1.234, lr 3.0e-04

    `fields` (update / set_fields) are shown as tqdm's postfix or appended as "name value". As a context manager
    (`with Progress(...) as bar:`) it is closed on leaving the block.
    """

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True,
                 every_s: float = 30.0, every_n: int = 0, stream=None, final: bool = True):
        self.total, self.count, self.initial = total, initial, initial
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.every_s, self.every_n, self.final = every_s, every_n, final
        self.stream = stream if stream is not None else sys.stdout
        self.fields: dict[str, str] = {}
        self.lines = 0
        self.start = self.last_t = time.perf_counter()
        self.last_n = initial
        self._closed = False
        self.bar = (tqdm(total=total, initial=initial, unit=unit, desc=desc, file=self.stream, dynamic_ncols=True,
                         leave=False) if enabled and _isatty(self.stream) else None)

    def set_fields(self, **fields) -> None:
        self.fields.update({k: str(v) for k, v in fields.items()})
        if self.bar is not None:
            self.bar.set_postfix(self.fields, refresh=False)

    def update(self, n: int = 1, **fields) -> None:
        self.count += n
        if fields:
            self.set_fields(**fields)
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.enabled:
            return
        now = time.perf_counter()
        due = now - self.last_t >= self.every_s or (self.every_n > 0 and self.count - self.last_n >= self.every_n)
        if due or (self.total is not None and self.count >= self.total and (self.final or self.lines)):
            self._print(now)

    def line(self, now: float | None = None) -> str:
        """The plain progress line as it stands."""
        elapsed = (now or time.perf_counter()) - self.start
        rate = (self.count - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.count}/{self.total} {self.unit}" if self.total else f"{self.count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.count / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s, elapsed {_clock(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"eta {_clock((self.total - self.count) / rate)}")
        parts += [f"{k} {v}" for k, v in self.fields.items()]
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def _print(self, now: float) -> None:
        if self.count == self.last_n and self.lines:
            return  # nothing new since the last line
        print(self.line(now), file=self.stream, flush=True)
        self.lines += 1
        self.last_t, self.last_n = now, self.count

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.count != self.last_n and (self.final or self.lines):
            self._print(time.perf_counter())


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
