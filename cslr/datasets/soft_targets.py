"""Teacher soft targets for knowledge distillation: distributed generation into sidecar shards, reading, checking.

    accelerate launch launch/soft_targets.py --checkpoint runs/teacher/best_model.pth --data DIR --out DIR-soft
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/soft_targets.py ...   # 2 ranks, CPU
    python launch/soft_targets.py --data DIR --out DIR-soft --verify          # completeness + checksums, exit 1 if not
    python launch/teacher.py ... --soft_targets DIR-soft                      # the loader zips them into train batches

Sidecar folder (format "cslr-soft/2"): one tar shard per data shard of the split, with the same name, the same keys
in the same order, and per key ONE member, `soft.npy` (plain `.npy`, never pickled): a structured (T',) array,
one record per teacher output frame, with the fields

| field  | content                                                                                              |
| ------ | ---------------------------------------------------------------------------------------------------- |
| `logp` | (K,) float16 or float32 (`--dtype`): log_softmax(teacher log-probs / T) of the K most probable labels, |
|        | best first                                                                                           |
| `idx`  | (K,) their label ids (blank = 0) in the smallest type that holds V: uint8 for V <= 256, uint16 for     |
|        | V <= 65536, else int32. `--topk 0` = dense: K = V and no `idx` field (the reader rebuilds arange(V))  |
| `hyp`  | () the teacher's greedy hypothesis as label ids (same type as `idx`), one gloss per record from the    |
|        | first, 0 (blank, never a gloss) after its end: a greedy CTC hypothesis is never longer than T'        |

Why one member per key: a tar member costs a 512-byte header plus padding of its data to 512 bytes, about 1 KB,
while a top-K payload is small (K = 8 at fp16 + uint16 ids + the hyp id: 34 bytes per teacher frame, ~550 bytes for a
17-frame synthetic video, ~1.1 KB for a PHOENIX video). The earlier three members per key (logp, idx, json) cost
~2.5 KB of framing per key, which alone held top-K to ~35x below dense fp32 at PHOENIX's vocabulary on short
videos; one member halves-to-thirds that. What the per-key `soft.json` held moved out of the hot path: frames =
len(array), the greedy hypothesis rides in the records (1-2 bytes per frame), T / K / dtype are the folder's
settings (manifest), and a skipped video's reason is in the manifest. `read_sidecar` gives {"frames", "hyp" (ids)}
per key; `Vocabulary.decode` turns the ids into glosses.
Sidecars of the earlier format "cslr-soft/1" (`soft_logp.npy` float16 + `soft_idx.npy` int32 + `soft.json`) are
still read; generation always writes the current format.

T' is the teacher's output frame count of the un-augmented video (eval transform). A video the teacher cannot
handle (a sample that fails the loader's checks, a decode error, non-finite outputs) is NOT dropped: its key
gets an explicit record with 0 frames, and is listed with its reason under "skipped" in the shard's record and
the manifest; the train loader skips and counts such a video (reason
"no_soft_target"). So the keys of a sidecar always mirror its data shard.

`manifest.json` (written by rank 0 when every shard is complete): format, teacher_checkpoint, teacher_sha256,
temperature, topk, vocab_size (blank included), split, image_size, dtype, index_dtype (null when dense), data,
num_samples, skipped, and shards {name: {count, sha256, keys_sha256, data_sha256, frames, bytes, payload_bytes}}
(`bytes`: the shard file's size; `payload_bytes`: its arrays alone, without npy headers, json and tar framing). `records/<shard>.json` marks a finished sidecar shard
(written after the shard's atomic rename): a rerun skips shards whose record, checksum, settings and data
checksum match, and rewrites the others (left-over temporary files are removed). Settings (teacher weights,
T, K, split, image size, dtype) that differ from those of a non-empty folder are refused unless `--overwrite`.

Shard i goes to rank i % world_size: disjoint, every shard exactly once for any world size; a rank reads its
shards in file order and batches consecutive videos of one shard, so the output does not depend on the
world size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from cslr.io import read_json_record, sha256_file

from .shards import BadSample, iter_shard
from .writer import MANIFEST, load_manifest

# cslr.datasets.pipeline imports this module: its names are imported here inside the functions that use them.

log = logging.getLogger("cslr.soft_targets")

FORMAT = "cslr-soft/2"
READABLE_FORMATS = ("cslr-soft/1", FORMAT)  # /1: soft_logp.npy float16 + soft_idx.npy int32 + soft.json
SOFT_NPY, SOFT_JSON = "soft.npy", "soft.json"
SOFT_MEMBERS = (SOFT_NPY,)  # what generation writes per key
SOFT_LOGP, SOFT_IDX = "soft_logp.npy", "soft_idx.npy"  # "cslr-soft/1" members, read only
V1_MEMBERS = (SOFT_LOGP, SOFT_IDX, SOFT_JSON)
READ_MEMBERS = (SOFT_NPY, SOFT_LOGP, SOFT_IDX, SOFT_JSON)  # what the loader zips into a sample
DTYPES = ("float16", "float32")  # --dtype of the stored log-probabilities
INDEX_DTYPES = ("uint8", "uint16", "int32")
RECORDS = "records"  # per-shard completion records
SETTINGS = ("teacher_sha256", "temperature", "topk", "vocab_size", "split", "image_size", "dtype")


class SoftTargetError(ValueError):
    """Soft targets that are missing, incomplete or do not match the data: never skipped like a bad sample (the
    loader re-raises it where it counts other read errors), a clear error for the entry points (ValueError)."""


def index_dtype(vocab_size: int) -> str:
    """The smallest integer type that holds label ids 0..V-1: uint8 (V <= 256), uint16 (V <= 65536), else int32."""
    return "uint8" if vocab_size <= 1 << 8 else "uint16" if vocab_size <= 1 << 16 else "int32"


@dataclass(frozen=True)
class SoftLayout:
    """How one key's soft targets are stored in `soft.npy`: K labels per frame, the log-prob dtype, the label-id
    dtype (None: dense, ids = arange(K) are not stored)."""

    k: int
    dtype: str = "float16"
    idx_dtype: str | None = "int32"
    hyp_dtype: str = "int32"

    @classmethod
    def of(cls, topk: int, vocab_size: int, dtype: str = "float16") -> "SoftLayout":
        """The layout generation writes for these settings."""
        ids = index_dtype(vocab_size)
        return cls(topk or vocab_size, dtype, ids if topk else None, ids)

    @property
    def record(self) -> np.dtype:
        """The structured dtype of one teacher frame."""
        fields = [("logp", self.dtype, (self.k,))]
        if self.idx_dtype is not None:
            fields.append(("idx", self.idx_dtype, (self.k,)))
        fields.append(("hyp", self.hyp_dtype))
        return np.dtype(fields)

    def pack(self, logp: np.ndarray, idx: np.ndarray | None, hyp=()) -> np.ndarray:
        """(T', K) log-probs, label ids (ignored when dense) and the greedy hypothesis (label ids, at most T')
        -> the (T',) structured array of `soft.npy`."""
        arr = np.empty(len(logp), self.record)
        arr["logp"] = logp
        if self.idx_dtype is not None:
            _check_fits(idx, self.idx_dtype, "label ids")
            arr["idx"] = idx
        hyp = np.asarray(hyp, dtype=np.int64)
        if len(hyp) > len(logp) or (hyp.size and hyp.min() < 1):
            raise SoftTargetError(f"hypothesis {hyp.tolist()} for {len(logp)} frames: a greedy CTC hypothesis has at "
                                  f"most one gloss (id >= 1) per frame")
        _check_fits(hyp, self.hyp_dtype, "hypothesis ids")
        arr["hyp"] = 0
        arr["hyp"][:len(hyp)] = hyp
        return arr


def _check_fits(ids: np.ndarray, dtype: str, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
        raise SoftTargetError(f"{what} [{ids.min()}, {ids.max()}] do not fit {dtype}")


# ----------------------------------------------------------------------------------------------------
# Reading (the loader side)


def load_soft_manifest(soft_dir: str | os.PathLike) -> dict:
    """Read a sidecar folder's `manifest.json`, with a clear error naming the problem."""
    soft_dir = Path(soft_dir)
    path = soft_dir / MANIFEST
    if not soft_dir.is_dir():
        raise SoftTargetError(f"soft-target folder {soft_dir} does not exist (generate it with launch/soft_targets.py)")
    if not path.is_file():
        raise SoftTargetError(f"{path}: no manifest.json; generation of {soft_dir} is incomplete "
                              f"(rerun launch/soft_targets.py to finish it, --verify to see what is missing)")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise SoftTargetError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("format") not in READABLE_FORMATS:
        raise SoftTargetError(f"{path}: format {manifest.get('format')!r}, expected one of {READABLE_FORMATS} (not a "
                              f"soft-target folder, or written by a newer cslr)")
    missing = [k for k in ("shards", "split", "vocab_size", "topk", "temperature") if k not in manifest]
    if missing:
        raise SoftTargetError(f"{path}: lacks {missing}")
    return manifest


def check_sidecars(soft_dir: str | os.PathLike, data_manifest: dict, split: str, vocab_size: int) -> int:
    """Check a sidecar folder against the data manifest before training; return K (labels per frame)."""
    sm = load_soft_manifest(soft_dir)
    where = Path(soft_dir) / MANIFEST
    if sm["split"] != split:
        raise SoftTargetError(f"{where}: soft targets of split {sm['split']!r}, the loader reads {split!r}")
    if sm["vocab_size"] != vocab_size:
        raise SoftTargetError(f"{where}: teacher vocabulary of {sm['vocab_size']} classes, the data has {vocab_size}")
    for entry in data_manifest["splits"][split]["shards"]:
        side = sm["shards"].get(entry["name"])
        if side is None:
            raise SoftTargetError(f"{where}: no sidecar for data shard {entry['name']}")
        if side["data_sha256"] != entry["sha256"] or side["count"] != entry["count"]:
            raise SoftTargetError(f"{where}: sidecar {entry['name']} was generated from other data (data shard "
                                  f"checksum or count differs); regenerate the soft targets")
        f = Path(soft_dir) / entry["name"]
        if f.is_file() and "bytes" in side and f.stat().st_size != side["bytes"]:
            raise SoftTargetError(f"{f}: {f.stat().st_size} bytes, {where} says {side['bytes']}: the sidecar shard "
                                  "changed after generation (copied from another soft-target folder?)")
    return int(sm["topk"]) or int(sm["vocab_size"])


def zip_sidecar(samples: Iterable[dict], sidecar: Path) -> Iterator[dict]:
    """Raw data samples of one shard + the soft-target members of its sidecar, checking keys pairwise."""
    name = sidecar.name
    if not sidecar.is_file():
        raise SoftTargetError(f"data shard {name}: no sidecar shard {sidecar} (soft targets incomplete?)")
    # Its sha256 is checked as it streams (a sidecar of the same size from another folder, e.g. another T).
    side = ((read_json_record(sidecar.parent / MANIFEST) or {}).get("shards") or {}).get(name) or {}
    soft_iter = iter_shard(sidecar, side.get("sha256"))

    def next_soft(after: str):
        try:
            return next(soft_iter, None)
        except (OSError, tarfile.TarError, ValueError, EOFError) as e:
            raise SoftTargetError(f"sidecar {sidecar}: unreadable after key {after!r} ({e})") from e

    key = "(start)"
    for sample in samples:
        soft = next_soft(key)
        key = sample["__key__"]
        if soft is None:
            raise SoftTargetError(f"shard {name}: key {key!r} has no soft targets (sidecar {sidecar} ends before it)")
        if soft["__key__"] != key:
            raise SoftTargetError(f"shard {name}: key mismatch: data key {key!r}, sidecar key {soft['__key__']!r} "
                                  f"({sidecar} does not mirror the data shard)")
        yield {**sample, **{m: soft[m] for m in READ_MEMBERS if m in soft}}
    extra = next_soft(key)
    if extra is not None:
        raise SoftTargetError(f"shard {name}: sidecar {sidecar} has key {extra['__key__']!r} after the data's last "
                              f"key {key!r}")


def _members_of(sample: dict) -> tuple[str, ...]:
    """The soft-target members a record of either format must have (the format is told by `soft.npy`)."""
    return SOFT_MEMBERS if SOFT_NPY in sample else V1_MEMBERS


def check_soft_members(sample: dict) -> dict:
    """The raw soft-target members of a zipped sample. Raises BadSample for a video the teacher skipped."""
    needed = _members_of(sample)
    missing = [m for m in needed if m not in sample]
    if missing:
        raise SoftTargetError(f"sample {sample['__key__']!r} ({sample.get('__url__', '?')}): sidecar lacks {missing}")
    if SOFT_NPY in sample:
        if len(_load_npy(sample[SOFT_NPY], SOFT_NPY)) == 0:  # a video has >= 1 teacher frame
            raise BadSample("no_soft_target", "the teacher skipped it (the reason is under 'skipped' in the "
                                              "sidecar folder's manifest.json)")
    else:
        info = json.loads(sample[SOFT_JSON])
        if "skipped" in info:
            raise BadSample("no_soft_target", f"the teacher skipped it: {info['skipped']}")
    return {m: sample[m] for m in needed}


def _load_npy(data: bytes, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/EOFError/OSError on bad bytes
        raise SoftTargetError(f"{what}: unreadable ({e})") from e


def _unpack_v2(data: bytes) -> tuple[np.ndarray, np.ndarray, dict]:
    """`soft.npy` bytes -> (T', K) log-probs and label ids as stored (dense: arange(K) rebuilt), and
    {"frames": T', "hyp": the greedy hypothesis as a list of label ids}."""
    arr = _load_npy(data, SOFT_NPY)
    names = arr.dtype.names or ()
    logp_t = arr.dtype.fields["logp"][0] if "logp" in names else None
    idx_t = arr.dtype.fields["idx"][0] if "idx" in names else None
    hyp_t = arr.dtype.fields["hyp"][0] if "hyp" in names else None
    ok = (arr.ndim == 1 and names in (("logp", "hyp"), ("logp", "idx", "hyp")) and logp_t.base.name in DTYPES
          and logp_t.ndim == 1 and (idx_t is None or (idx_t.base.name in INDEX_DTYPES and idx_t.shape == logp_t.shape))
          and hyp_t.name in INDEX_DTYPES)
    if not ok:
        raise SoftTargetError(f"{SOFT_NPY}: {arr.dtype} {arr.shape}, expected a (T',) record array with fields logp "
                              f"(K,) {'/'.join(DTYPES)}, optional idx (K,) and hyp () {'/'.join(INDEX_DTYPES)}")
    # contiguous copies: a field of a packed record is a strided, possibly misaligned view (torch refuses those)
    logp, hyp = np.ascontiguousarray(arr["logp"]), arr["hyp"]  # (T', K), (T',)
    info = {"frames": len(arr), "hyp": hyp[hyp != 0].tolist()}
    if idx_t is None:  # dense: the labels are every class in order
        k = logp_t.shape[0]
        return logp, np.broadcast_to(np.arange(k, dtype=index_dtype(k)), (len(arr), k)), info
    return logp, np.ascontiguousarray(arr["idx"]), info


def _unpack_v1(members: dict) -> tuple[np.ndarray, np.ndarray]:
    """"cslr-soft/1" members -> (T', K) float16 log-probs and int32 label ids."""
    logp, idx = _load_npy(members[SOFT_LOGP], SOFT_LOGP), _load_npy(members[SOFT_IDX], SOFT_IDX)
    if logp.dtype != np.float16 or idx.dtype != np.int32 or logp.ndim != 2 or logp.shape != idx.shape:
        raise SoftTargetError(f"soft targets {logp.dtype}{logp.shape} / {idx.dtype}{idx.shape}, expected float16 and "
                              f"int32 of the same shape (T', K)")
    return logp, idx


def unpack_soft(members: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """The soft-target members of one key (either format) -> (logp (T', K), idx (T', K), info) as stored; info is
    {"frames": T', "hyp": label ids} (format 1: its soft.json, "hyp" as glosses)."""
    if SOFT_NPY in members:
        return _unpack_v2(members[SOFT_NPY])
    logp, idx = _unpack_v1(members)
    info = json.loads(members[SOFT_JSON])
    if logp.shape[0] != info["frames"]:
        raise SoftTargetError(f"soft targets of {logp.shape[0]} frames, {SOFT_JSON} says {info['frames']}")
    return logp, idx, info


def decode_soft(members: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-target members -> (T', K) float32 log-probabilities and (T', K) int64 label ids."""
    logp, idx, _ = unpack_soft(members)
    return torch.from_numpy(logp.astype(np.float32)), torch.from_numpy(idx.astype(np.int64))


def read_sidecar(path: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """All records of one sidecar shard in order: (key, logp (T', K), idx (T', K), info {"frames": T', "hyp": the
    teacher's greedy hypothesis as label ids}), in the stored dtypes (dense: idx = arange(V) rebuilt)."""
    return [(s["__key__"], *unpack_soft(s)) for s in iter_shard(Path(path))]


def payload_bytes(members: dict) -> int:
    """Bytes of one record's stored arrays alone (no npy header, json or tar framing)."""
    if SOFT_NPY in members:
        return _load_npy(members[SOFT_NPY], SOFT_NPY).nbytes
    return sum(_load_npy(members[m], m).nbytes for m in (SOFT_LOGP, SOFT_IDX))


# ----------------------------------------------------------------------------------------------------
# Computing and encoding


def select_soft(log_probs: torch.Tensor, temperature: float, topk: int,
                dtype: str = "float16") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(..., V) log-probs -> log_softmax(log_probs / T) restricted to the top-K labels, best first (K = 0: all V).

    Returns the values in `dtype` (float16 clamped to its range: a log-prob below -65504 becomes -65504) and the
    int32 label ids (..., K), None when dense (the ids are arange(V)).
    """
    lp = torch.log_softmax(log_probs.float() / temperature, dim=-1)  # fp32, shift-invariant: = from logits
    idx = None
    if topk:
        lp, idx = lp.topk(topk, dim=-1, largest=True, sorted=True)
        idx = idx.int()
    if dtype == "float16":
        lp = lp.clamp_min(torch.finfo(torch.float16).min)
    return lp.to(getattr(torch, dtype)), idx


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def sample_members(key: str, layout: SoftLayout, logp: np.ndarray, idx: np.ndarray | None, hyp=()) -> dict:
    """One sidecar record (member dict for the writer): (T', K) log-probs, label ids (None when dense) and the
    greedy hypothesis (label ids)."""
    return {"__key__": key, SOFT_NPY: _npy(layout.pack(logp, idx, hyp))}


def skipped_members(key: str, layout: SoftLayout) -> dict:
    """The explicit record of a video without soft targets (keeps the keys mirrored): 0 frames."""
    empty = np.zeros((0, layout.k), np.float32)
    return sample_members(key, layout, empty, empty.astype(np.int32))


def keys_sha256(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def record_path(out: Path, name: str) -> Path:
    return out / RECORDS / f"{name}.json"



# ----------------------------------------------------------------------------------------------------
# Verification


def verify(data_dir: str | os.PathLike, soft_dir: str | os.PathLike, split: str = "") -> list[str]:
    """Problems of a sidecar folder against the data (empty list: complete and consistent). No teacher run.

    Checks: manifest.json present; every data shard of the split has a sidecar with a record (manifest entry or,
    while incomplete, completion record) whose checksum equals the file's, whose data checksum equals the data
    manifest's, and whose keys equal the data shard's keys in order; no sidecar without a data shard.
    """
    data_dir, soft_dir = Path(data_dir), Path(soft_dir)
    manifest = load_manifest(data_dir)
    problems = []
    try:
        sm = load_soft_manifest(soft_dir)
        split = split or sm["split"]
        entries = sm["shards"]
    except SoftTargetError as e:
        problems.append(str(e))
        split = split or "train"
        entries = {p.name[:-5]: read_json_record(p) or {} for p in sorted((soft_dir / RECORDS).glob("*.json"))}
    if split not in manifest["splits"]:
        return problems + [f"{data_dir / MANIFEST}: no split {split!r}"]
    data_entries = manifest["splits"][split]["shards"]
    for d in data_entries:
        name, path = d["name"], soft_dir / d["name"]
        rec = entries.get(name)
        if not path.is_file():
            problems.append(f"{name}: missing sidecar shard {path}")
        elif rec is None:
            problems.append(f"{name}: no record (shard not finished)")
        elif sha256_file(path) != rec.get("sha256"):
            problems.append(f"{name}: checksum mismatch (file {path} differs from its record: corrupted or partial)")
        elif rec.get("data_sha256") != d["sha256"]:
            problems.append(f"{name}: generated from other data (data checksum differs from {data_dir / MANIFEST})")
        else:
            try:
                keys = [s["__key__"] for s in iter_shard(path)]
            except (OSError, tarfile.TarError, ValueError, EOFError) as e:
                problems.append(f"{name}: unreadable sidecar ({e})")
                continue
            if keys != d["keys"]:
                first = next((i for i, (a, b) in enumerate(zip(keys, d["keys"])) if a != b), min(len(keys), len(d["keys"])))
                problems.append(f"{name}: keys differ from the data shard at position {first} "
                                f"({len(keys)} sidecar keys, {len(d['keys'])} data keys)")
    names = {d["name"] for d in data_entries}
    problems += [f"{p.name}: sidecar without a data shard in split {split!r}"
                 for p in sorted(soft_dir.glob("*.tar")) if p.name not in names]
    return problems
