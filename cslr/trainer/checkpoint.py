"""Checkpoint folders: atomic save of everything a run resumes from, validated before it is trusted, read back
without unpickling anything, and `--resume auto` (the portable `best_model.pth` is `cslr.models.checkpoint`).

A checkpoint is written into `checkpoints/.tmp-<name>` by every rank, completed by the main process with
`trainer_state.json` and then `checkpoint.json` (written last: every file of the folder with its size and
sha256), and renamed to `checkpoints/<name>`. A folder without the `.tmp-` prefix that holds `checkpoint.json` is
complete; a process killed during a save leaves only a `.tmp-` folder, which `--resume auto` ignores and the next
save removes.

Nothing read back can run code: the weights are safetensors, the optimizer and loss-scaler states are plain
tensors and numbers (`torch.load(weights_only=True)`), the schedule's state and the run's position are JSON
(`trainer_state.json`), and each rank's RNG states are tensors in `rng_state_<rank>.safetensors`. Accelerate's own
pickled files (`random_states_*.pkl`, `custom_checkpoint_*.pkl`) are neither written nor read. Under DeepSpeed the
engine's files (`pytorch_model/*.pt`) are written and read by DeepSpeed itself, with `torch.load(weights_only=False)`;
so before DeepSpeed sees them every one is loaded here with `weights_only=True`, allowing only the few plain classes
a ZeRO checkpoint holds (`DEEPSPEED_SAFE_GLOBALS`), and must be listed in the manifest: DeepSpeed then reads bytes
that were just shown to hold nothing that runs.

`--resume auto` takes the newest checkpoint whose manifest checks out (every file present, same size, same
sha256); a damaged one is skipped with a warning that names the file and the problem.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cslr.io import atomic_write_json, sha256_file
from cslr.models.checkpoint import safe_load

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.bin"
SCALER_FILE = "scaler.pt"
CKPT_RE = re.compile(r"^ckpt-e(\d+)-s(\d+)$")
FORMAT = "cslr-checkpoint/2"

logger = logging.getLogger("cslr")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged or of an unknown kind; the message names the file and the problem."""


def checkpoint_name(epoch: int, global_step: int) -> str:
    return f"ckpt-e{epoch:04d}-s{global_step:09d}"


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (their manifest written), oldest first (by optimizer step). Not yet validated."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m and ((p / MANIFEST_FILE).is_file() or (p / STATE_FILE).is_file()):
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def verify_checkpoint(path: str | os.PathLike, hashes: bool = True) -> dict:
    """Check a checkpoint folder against its manifest -> the manifest. Raises CheckpointError naming the file."""
    path = Path(path)
    man_path = path / MANIFEST_FILE
    if not man_path.is_file():
        what = (f"written by an older version (no {MANIFEST_FILE}; its scheduler state is pickled and is not loaded)"
                if (path / STATE_FILE).is_file() else f"incomplete (no {MANIFEST_FILE})")
        raise CheckpointError(f"{path}: checkpoint {what}")
    try:
        manifest = json.loads(man_path.read_text("utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{man_path}: not a checkpoint manifest ({e})") from e
    for name, want in files.items():
        f = path / name
        if any(not part or part.startswith(".") for part in name.split("/")) or not f.is_file():
            raise CheckpointError(f"{f}: missing (listed in {man_path})")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, {man_path} says {want['bytes']} (truncated or changed)")
        if hashes and sha256_file(f) != want["sha256"]:
            raise CheckpointError(f"{f}: sha256 differs from {man_path} (corrupted or changed)")
    for required in (STATE_FILE, rng_file(0)):
        if required not in files:
            raise CheckpointError(f"{man_path}: lists no {required}")
    if hashes:
        check_engine_files(path, files)
    return manifest


# The classes a DeepSpeed ZeRO-2/3 checkpoint pickles besides tensors and builtins (found by saving real ones): the
# loss scaler (plain attributes; dynamic with fp16), the ZeRO stage (an Enum) and the addresses of parameter
# fragments in ZeRO's flat buffers (a dataclass). None runs code when rebuilt.
DEEPSPEED_SAFE_GLOBALS = (("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
                          ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
                          ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
                          ("deepspeed.utils.tensor_fragment", "fragment_address"))


def check_engine_files(path: Path, listed: dict) -> None:
    """The DeepSpeed engine's files of checkpoint `path` (every file in a subfolder: DeepSpeed finds them by glob
    and reads them with `torch.load(weights_only=False)`) must be listed in the manifest and load with
    `weights_only=True`, nothing but `DEEPSPEED_SAFE_GLOBALS` allowed. CheckpointError naming the file otherwise."""
    engine = [f for f in sorted(path.rglob("*")) if f.parent != path and f.is_file()]
    if not engine:
        return
    allowed = [getattr(importlib.import_module(module), name) for module, name in DEEPSPEED_SAFE_GLOBALS]
    for f in engine:
        if f.relative_to(path).as_posix() not in listed:
            raise CheckpointError(f"{f}: not listed in {path / MANIFEST_FILE} (not written by the run); not loaded")
        try:
            with torch.serialization.safe_globals(allowed):
                torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            try:
                names = set(torch.serialization.get_unsafe_globals_in_checkpoint(f))
                names -= {f"{module}.{name}" for module, name in DEEPSPEED_SAFE_GLOBALS}
            except Exception:
                names = set()
            why = f"it pickles {', '.join(sorted(names))}" if names else str(e).strip().splitlines()[0]
            raise CheckpointError(f"{f}: not a file of plain tensors and DeepSpeed state ({why}); refused without "
                                  f"running it") from e


def find_resume(resume: str, ckpt_dir: str | os.PathLike) -> Path | None:
    """`auto` -> the newest valid checkpoint (damaged newer ones skipped with a warning), or None when there is
    none at all; a path -> that checkpoint, which must be valid. Raises CheckpointError when checkpoints exist but
    none is valid (a fresh start would prune them)."""
    if not resume:
        return None
    if resume != "auto":
        verify_checkpoint(resume)
        return Path(resume)
    rejected = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            logger.warning("--resume auto: skipping damaged checkpoint: %s", e)
            rejected.append(str(e))
            continue
        if rejected:
            logger.warning("--resume auto: falling back to %s (%d newer checkpoint(s) rejected)", path.name,
                           len(rejected))
        return path
    if rejected:
        raise CheckpointError(f"{ckpt_dir}: no valid checkpoint to resume from: " + "; ".join(rejected))
    return None


# ---------------------------------------------------------------------------------------------- RNG
def rng_tensors() -> tuple[dict, dict]:
    """This process's RNG states (Python, NumPy, torch CPU, CUDA) as tensors + plain metadata, no pickle."""
    version, py_state, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    tensors = {"python": torch.tensor(py_state, dtype=torch.int64), "numpy": torch.from_numpy(key.astype(np.int64)),
               "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    meta = {"python": json.dumps([version, gauss]), "numpy": json.dumps([name, int(pos), int(has_gauss),
                                                                        float(cached)])}
    return tensors, meta


def load_rng(path: Path) -> None:
    """Restore the RNG states of `rng_tensors` from `path`; CheckpointError naming the file if it is unusable."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        version, gauss = json.loads(meta["python"])
        name, pos, has_gauss, cached = json.loads(meta["numpy"])
        py_state = tuple(int(v) for v in tensors["python"].tolist())
        key = tensors["numpy"].numpy().astype(np.uint32)
        if len(py_state) != 625 or key.shape != (624,) or tensors["torch"].dtype != torch.uint8:
            raise ValueError("state tensors of the wrong size or type")
        random.setstate((int(version), py_state, gauss))
        np.random.set_state((name, key, int(pos), int(has_gauss), float(cached)))
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[f"cuda_{i}"] for i in range(len(tensors)) if f"cuda_{i}" in tensors]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: RNG state unreadable ({e}); an exact resume needs it") from e


# ---------------------------------------------------------------------------------------------- save
def save_checkpoint(accelerator, ckpt_dir: str | os.PathLike, name: str, trainer_state: dict, keep_last: int) -> Path:
    """Save model/optimizer/scaler (Accelerate, no registered objects), every rank's RNG as tensors, the trainer
    state (JSON) and the manifest (written last), atomically; prune old checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / name
    tmp = ckpt_dir / f".tmp-{name}"
    try:
        if accelerator.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            for stale in ckpt_dir.glob(".tmp-*"):  # left by a process killed while saving
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        rank = accelerator.process_index
        (tmp / f"random_states_{rank}.pkl").unlink(missing_ok=True)  # Accelerate's pickle: ours is below
        tensors, meta = rng_tensors()
        save_file(tensors, str(tmp / rng_file(rank)), metadata=meta)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(tmp / STATE_FILE, trainer_state)
            files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            atomic_write_json(tmp / MANIFEST_FILE, {"format": FORMAT, "world_size": accelerator.num_processes,
                                                    "files": files})
            _fsync_dir(tmp)
            if final.exists():  # same step saved again (a signal right after a periodic save): replaced only now
                old = ckpt_dir / f".tmp-old-{name}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(ckpt_dir)
            for old in list_checkpoints(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise OSError(e.errno, f"saving checkpoint {tmp}: {e.strerror or e} (disk full?); the previous "
                               f"checkpoints in {ckpt_dir} are intact") from e
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------- load
def load_trainer_state(path: str | os.PathLike) -> dict:
    f = Path(path) / STATE_FILE
    try:
        state = json.loads(f.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{f}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{f}: expected a JSON object, got {type(state).__name__}")
    return state


def _torch_file(path: Path):
    """A torch file of plain tensors (`weights_only`, nothing executed), its errors as CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return safe_load(path, what="checkpoint file", kind="file of plain tensors")
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from e


def load_checkpoint(accelerator, model, optimizer, path: str | os.PathLike) -> dict:
    """Validate `path` and restore model, optimizer, scaler and this rank's RNG -> the trainer state (a dict).
    Raises CheckpointError naming the file that is missing or unusable."""
    path = Path(path)
    manifest = verify_checkpoint(path)
    state = load_trainer_state(path)
    rank = accelerator.process_index
    exact = manifest.get("world_size", 1) == accelerator.num_processes
    if not exact:
        logger.warning("%s: saved by %s processes, resumed by %d: NOT an exact resume (data order and RNG streams "
                       "differ from an uninterrupted run)", path, manifest.get("world_size"), accelerator.num_processes)
    if accelerator.distributed_type.name == "DEEPSPEED":
        # the engine's files (model, ZeRO optimizer shards), each just loaded with weights_only by verify_checkpoint
        accelerator.load_state(str(path))
    else:
        f = path / MODEL_FILE
        try:
            weights = load_file(str(f))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{f}: unreadable safetensors ({e})") from e
        weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in weights.items()}
        try:
            accelerator.unwrap_model(model).load_state_dict(weights)
            optimizer.load_state_dict(_torch_file(path / OPTIMIZER_FILE))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: weights or optimizer state do not fit this model ({e})") from e
        if accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(_torch_file(path / SCALER_FILE))
    if exact or (path / rng_file(rank)).is_file():
        load_rng(path / rng_file(rank))
    return state


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
