"""Checkpoint folders: atomic `accelerator.save_state` folders and `--resume auto` (the portable `best_model.pth`
is `cslr.models.checkpoint`).

A checkpoint is written into `checkpoints/.tmp-<name>` by every rank, completed by the main process with
`trainer_state.json` (written last), and renamed to `checkpoints/<name>`: a folder without the `.tmp-` prefix
that holds `trainer_state.json` is complete. A process killed during a save leaves only a `.tmp-` folder,
which `--resume auto` ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from cslr.io import atomic_write_json

STATE_FILE = "trainer_state.json"
CKPT_RE = re.compile(r"^ckpt-e(\d+)-s(\d+)$")


def checkpoint_name(epoch: int, global_step: int) -> str:
    return f"ckpt-e{epoch:04d}-s{global_step:09d}"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (by optimizer step)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def find_resume(resume: str, ckpt_dir: str | os.PathLike) -> Path | None:
    """`auto` -> newest complete checkpoint or None; a path -> that checkpoint (must be complete)."""
    if not resume:
        return None
    if resume == "auto":
        ckpts = list_checkpoints(ckpt_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE})")
    return path


def save_checkpoint(accelerator, ckpt_dir: str | os.PathLike, name: str, trainer_state: dict, keep_last: int) -> Path:
    """Save model/optimizer/scheduler/scaler/RNG (every rank) + trainer state, atomically; prune old ones."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / name
    tmp = ckpt_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir.glob(".tmp-*"):  # left by a process killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # same step saved again (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, trainer_state)
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        for old in list_checkpoints(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_trainer_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text("utf-8"))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
