"""The corpus-independent half of every converter: rows -> shards, resumably, in parallel, with skips counted.

A corpus (cslr/datasets/phoenix.py, csl_daily.py, video_corpus.py) says which rows each split has and how to
decode one row's frames (a `Corpus`); this module does the rest, identically for all of them:

- shard i of a split holds rows [i * shard_size, (i + 1) * shard_size) of that split's well-formed rows, in
  the corpus's order; frames are RGB -> (optional resize) -> JPEG; landmarks come from `<pose-dir>/<split>/<id>`
  `.npy` or `.pose` files, or are extracted inline with MediaPipe Holistic (`extract_pose`);
- a shard is written atomically and followed by a sidecar `.convert/{shard}.json` (its manifest entry and
  skipped rows); a rerun keeps every shard whose file and sidecar both exist and match the rows and settings,
  and rewrites the rest; a sidecar made with other settings is an error rather than a silent mix;
- a row that cannot be converted (missing or empty frame folder, unreadable frame or video, a 32-bit/float
  image, malformed row, no glosses, missing or unreadable pose file, pose values beyond float16's range) is
  skipped, listed in manifest["skipped"] and in the printed summary, or with `strict` is an error naming the
  row; a pose file whose frame count differs from the frames is always an error (the pose files belong to
  other data); 16-bit grayscale frames are scaled to 8 bits;
- a write error (a full disk) is a ConversionError naming the file; the pool (pool.py) runs shards in worker
  processes that exit when the converter is killed;
- `vocab.txt` holds the glosses of the train split, `manifest.json` the splits, shards, skips and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from cslr.io import Progress, atomic_write_json, read_json_record

from .landmarks import Holistic
from .pool import run_pool
from .posefile import PoseFileError, find_landmark_file, load_landmarks
from .schema import NUM_LANDMARKS, POSE_LAYOUT, VideoSample
from .video import VideoError, iter_frames, resample_indices
from .vocab import Vocabulary
from .writer import MANIFEST, VOCAB, shard_name, write_shard

SPLITS = ("train", "dev", "test")
DEFAULT_SHARD_SIZE = 32  # videos: ~45 MB at 260x210, and enough shards for dev/test to spread over ranks x workers
DEFAULT_JPEG_QUALITY = 90
STATE_DIR = ".convert"  # per-shard sidecars, for resuming
F16_MAX = float(np.finfo(np.float16).max)  # 65504: the largest landmark value a shard can hold


class ConversionError(ValueError):
    """Input that the converter refuses: the message names the file, row or video and the problem."""


class Skip(Exception):
    """A video that cannot be converted; its message is the reason recorded in manifest["skipped"]."""


@dataclass(frozen=True)
class Row:
    """One well-formed annotation row."""

    id: str
    gloss: str  # single-spaced
    signer: str
    source: tuple[str, ...]  # where the frames are, as the corpus reads it (globs, a folder, a file)
    where: str  # "file:line", for messages
    extra: dict = field(default_factory=dict)  # copied into meta.json


@dataclass
class FrameSource:
    """One video's frames, decoded lazily: uint8 RGB (H, W, 3) arrays at `fps`."""

    where: str  # the folder or file, for messages
    unit: str  # what a frame is there ("PNGs", "JPEGs", "frames")
    fps: float
    frames: Iterator[np.ndarray]
    count: int | None = None  # known before decoding (image folders), else None


class Corpus:
    """What a converter needs to know about one corpus. Subclasses are small picklable dataclasses."""

    name: str  # manifest "corpus", the CLI sub-command
    protocol: str  # manifest "protocol": the scoring rules
    fps: float | None  # the corpus's frame rate; None when it varies per video

    def read_split(self, split: str) -> tuple[list[Row], list[dict]]:
        """(well-formed rows in order, skipped entries {id, reason} of malformed rows). Raises ConversionError."""
        raise NotImplementedError

    def frames(self, row: Row, split: str, fps: float | None = None) -> FrameSource:
        """The row's frames (resampled to fps when given). Raises Skip; iterating may raise Skip too."""
        raise NotImplementedError

    def vocab_glosses(self) -> list[str]:
        """The gloss sequences the vocabulary is built from: the train split's."""
        return [r.gloss for r in self.read_split("train")[0]]


# --------------------------------------------------------------------------------------------- frame sources


def claim_key(key: str, where: str, seen: dict[str, int], lineno: int) -> None:
    """A video id read at `where` (line `lineno`) must be a usable WebDataset key, unique in its annotation file
    (`seen`: id -> line, updated)."""
    if not key or "." in key or "/" in key:
        raise ConversionError(f"{where}: video id {key!r} is empty or contains '.' or '/', "
                              f"which a WebDataset key cannot hold")
    if key in seen:
        raise ConversionError(f"{where}: video id {key!r} already used at line {seen[key]}")
    seen[key] = lineno


def frame_sort_key(name: str) -> tuple:
    """Natural order: digit runs compare as integers, so images2.png < images10.png whether or not numbers are
    zero-padded, and the 2014 names `<id>.avi_pid0_fn000123-0.png` sort by frame number. Ties: by name."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def read_image(path: Path) -> np.ndarray:
    """An image file -> uint8 RGB (H, W, 3). Raises Skip naming the file.

    16-bit grayscale (PIL mode "I;16*", e.g. a 16-bit PNG) is scaled to 8 bits (v * 255 / 65535, rounded), which
    PIL's own convert("RGB") would clip (everything above 255 -> 255); 16-bit RGB(A) PIL already reduces to 8 bits.
    32-bit integer and float images (modes "I", "F") have no range to scale from and are refused.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode.startswith("I;16"):
                gray = (np.asarray(im).astype(np.uint32) * 255 + 32767) // 65535
                return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
            if im.mode in ("I", "F"):
                raise Skip(f"unsupported frame: {path} (mode {im.mode}: 32-bit integer or float pixels, no known "
                           f"range to scale to 8 bits; store 8- or 16-bit images)")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises SyntaxError for some corrupt PNG chunks
        raise Skip(f"unreadable frame: {path} ({e})") from e


def image_folder_source(folder: Path, files: list[Path], src_fps: float, fps: float | None = None,
                        unit: str = "PNGs") -> FrameSource:
    """Frames from image files in frame order (resampled by index to fps when given)."""
    indices = resample_indices(len(files), src_fps, fps)

    def gen():
        last, rgb = None, None
        for i in indices:
            if i != last:
                rgb, last = read_image(files[i]), i
            yield rgb

    return FrameSource(str(folder), unit, float(fps or src_fps), gen(), len(indices))


def video_file_source(path: Path, fps: float | None = None, src_fps: float | None = None,
                      src_frames: int | None = None, frames: Iterator[np.ndarray] | None = None) -> FrameSource:
    """Frames decoded from a video file with PyAV; a VideoError becomes a Skip naming the file.

    With the container's frame count (`open_video`), `count` is the number of frames at `fps` (decoding stops
    with an error when the file holds fewer frames than its container declares). `frames`: the frames at `fps`
    already opened (`open_frames`, which decodes the first frame once), else iter_frames(path, fps) opens them."""
    def gen():
        try:
            yield from (iter_frames(path, fps=fps) if frames is None else frames)
        except VideoError as e:
            raise Skip(f"unreadable video: {e}") from e

    count = len(resample_indices(src_frames, src_fps or 0.0, fps)) if src_frames else None
    return FrameSource(str(path), "frames", float(fps or src_fps or 0.0), gen(), count)


def pose_layout(num_landmarks: int, channels: int) -> list[list]:
    """MediaPipe Holistic's layout for (543, 3) landmarks; anything else is recorded as ["custom", K]."""
    if (num_landmarks, channels) == (NUM_LANDMARKS, 3):
        return [list(part) for part in POSE_LAYOUT]
    return [["custom", num_landmarks]]


def load_pose(row: Row, pose_dir: Path) -> tuple[Path, np.ndarray]:
    """The row's (T, K, C) landmarks from `<pose_dir>/<id>.npy` or `.pose`. Raises Skip or ConversionError."""
    path = find_landmark_file(pose_dir, row.id)
    if path is None:
        raise Skip(f"missing pose file: {pose_dir / (row.id + '.npy')} (or .pose)")
    try:
        pose = load_landmarks(path)
    except PoseFileError as e:
        if "cannot map" in str(e):
            raise ConversionError(str(e)) from e  # a layout problem, not one bad file
        raise Skip(f"unreadable pose file: {e}") from e
    if pose.ndim != 3 or pose.dtype.kind not in "fiu":
        raise ConversionError(f"{path}: pose must be a numeric (T, K, C) array, got {pose.dtype} {pose.shape}")
    out = ~(np.abs(pose) <= F16_MAX) & ~np.isnan(pose)  # shards store float16: these would become inf
    if out.any():
        raise Skip(f"pose out of float16 range: {path}: {int(out.sum())} value(s) beyond +-{F16_MAX:g}, the range "
                   f"of the shard's float16 (largest {float(np.max(np.abs(pose[out]))):g})")
    return path, pose


def encode_jpeg(rgb: np.ndarray, frame_size: tuple[int, int] | None, quality: int) -> bytes:
    """uint8 RGB (H, W, 3) -> JPEG bytes at frame_size (H, W) or the original size."""
    im = Image.fromarray(rgb)
    if frame_size is not None and rgb.shape[:2] != tuple(frame_size):
        im = im.resize((frame_size[1], frame_size[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- one shard


@dataclass(frozen=True)
class Settings:
    """Everything that changes the bytes of a shard; a resumed run must use the same."""

    corpus: str
    frame_size: tuple[int, int] | None  # (H, W); None keeps the original size
    jpeg_quality: int
    shard_size: int
    with_pose: bool
    fps: float | None = None  # resample to this rate; None keeps the corpus's
    extract_pose: bool = False  # landmarks extracted inline with MediaPipe Holistic

    def as_json(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size) if self.frame_size else None
        for key in ("fps", "extract_pose"):  # only when set: sidecars of earlier versions stay valid
            if not d[key]:
                d.pop(key)
        return d


@dataclass
class ShardJob:
    split: str
    index: int
    rows: list[Row]
    corpus: Corpus
    pose_dir: Path | None  # <pose-dir>/<split>
    out_dir: Path
    settings: Settings
    strict: bool

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    @property
    def sidecar(self) -> Path:
        return self.out_dir / STATE_DIR / (self.name[: -len(".tar")] + ".json")


def load_video(row: Row, job: ShardJob) -> VideoSample:
    """One row -> a VideoSample (JPEG frames, pose when asked). Raises Skip or ConversionError."""
    settings = job.settings
    pose_file, pose = load_pose(row, job.pose_dir) if job.pose_dir is not None else (None, None)
    source = job.corpus.frames(row, job.split, settings.fps)
    jpegs, sizes, extracted = [], set(), []
    holistic = Holistic() if settings.extract_pose else None
    try:
        for rgb in source.frames:
            sizes.add(rgb.shape[:2])
            jpegs.append(encode_jpeg(rgb, settings.frame_size, settings.jpeg_quality))
            if holistic is not None:
                extracted.append(holistic(rgb))
    finally:
        if holistic is not None:
            holistic.close()
    if not jpegs:
        raise Skip(f"no frames in {source.where}")
    if len(sizes) > 1:
        raise Skip(f"frames of different sizes {sorted(sizes)} in {source.where}")
    if pose is not None and pose.shape[0] != len(jpegs):
        raise ConversionError(
            f"video {row.id}: pose file {pose_file} has {pose.shape[0]} frames but {source.where} has {len(jpegs)} "
            f"{source.unit}; the pose files belong to other data (another corpus, split or frame rate)")
    if holistic is not None:
        pose = np.stack(extracted).astype(np.float16)
    orig = sizes.pop()
    meta = {"signer": row.signer, "split": job.split, "fps": _meta_fps(source.fps), "num_frames": len(jpegs),
            "corpus": settings.corpus, "orig_size": list(orig), "frame_size": list(settings.frame_size or orig),
            **row.extra}
    if pose is not None:
        meta["pose_layout"] = pose_layout(*pose.shape[1:])
    return VideoSample(key=row.id, gloss=row.gloss, meta=meta, jpegs=jpegs, pose=pose)


def _meta_fps(fps: float):
    return int(fps) if float(fps).is_integer() else round(float(fps), 3)


def convert_shard(job: ShardJob, on_video: Callable[[], None] | None = None) -> dict:
    """Convert one shard's rows, write the shard (unless every row was skipped) and then its sidecar.

    Returns the sidecar record: settings, row ids, manifest entry (None when empty), skipped rows, stored frame
    sizes, frame rates and pose layouts seen.
    """
    samples, skipped = [], []
    for row in job.rows:
        try:
            samples.append(load_video(row, job))
        except Skip as e:
            if job.strict:
                raise ConversionError(f"{row.where}: video {row.id}: {e}") from None
            skipped.append({"id": row.id, "reason": str(e)})
        if on_video is not None:
            on_video()
    with writing(job.out_dir / job.name):
        entry = write_shard(job.out_dir / job.name, samples) if samples else None
    record = {
        "settings": job.settings.as_json(),
        "ids": [r.id for r in job.rows],
        "entry": entry,
        "skipped": skipped,
        "frame_sizes": sorted({tuple(s.meta["frame_size"]) for s in samples}),
        "fps": sorted({s.meta["fps"] for s in samples}),
        "pose_layouts": sorted({json.dumps(s.meta["pose_layout"]) for s in samples if "pose_layout" in s.meta}),
    }
    # After the shard: a sidecar exists only next to a complete shard.
    with writing(job.sidecar):
        atomic_write_json(job.sidecar, record)
    return record


@contextlib.contextmanager
def writing(path: Path):
    """An OSError while writing `path` (a full disk, no permission) -> a ConversionError naming it, so that the CLI
    ends with one line rather than a traceback. A leftover `.tmp-` file is removed by the next run."""
    try:
        yield
    except OSError as e:
        raise ConversionError(f"cannot write {path}: {e.strerror or e}; finished shards are kept, rerun to "
                              f"resume") from None


def reusable_record(job: ShardJob) -> dict | None:
    """The sidecar record of a shard that a previous run completed for the same rows, else None."""
    record = read_json_record(job.sidecar)
    if record is None:
        return None
    if record.get("settings") != job.settings.as_json():
        raise ConversionError(
            f"{job.sidecar}: {job.out_dir} holds shards made with other settings ({record.get('settings')}, now "
            f"{job.settings.as_json()}); use a fresh --out folder or delete the old shards and {STATE_DIR}/")
    if record.get("ids") != [r.id for r in job.rows]:
        return None  # the annotations changed under this shard: redo it
    shard = job.out_dir / job.name
    entry = record.get("entry")
    if entry is None:
        return None if shard.exists() else record
    if not shard.is_file() or shard.stat().st_size != entry["bytes"]:
        return None
    return record


def run_jobs(jobs: list[ShardJob], workers: int, bar: Progress) -> dict[tuple[str, int], dict]:
    """Convert shards in a process pool (in this process when workers <= 1) -> {(split, index): record}."""
    records = run_pool(convert_shard, jobs, workers, bar.update)
    return {(job.split, job.index): record for job, record in zip(jobs, records)}


# --------------------------------------------------------------------------------------------- the whole corpus


def _remove_stale_temps(out_dir: Path) -> int:
    """Temp files of an interrupted run (writer's `.{name}.tmp-{pid}`): never shards, removed."""
    stale = list(out_dir.glob(".*.tmp-*")) + list((out_dir / STATE_DIR).glob(".*.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _merge_frame_size(records: list[dict], requested: tuple[int, int] | None) -> list[int] | None:
    if requested is not None:
        return list(requested)
    sizes = sorted({tuple(s) for r in records for s in r["frame_sizes"]})
    if len(sizes) > 1:
        raise ConversionError(f"videos have different frame sizes {sizes}; pass --frame-size H W to store one size")
    return list(sizes[0]) if sizes else None


def _merge_fps(records: list[dict], corpus: Corpus, requested: float | None):
    if requested is not None:
        return _meta_fps(requested)
    if corpus.fps is not None:
        return _meta_fps(corpus.fps)
    rates = sorted({f for r in records for f in r.get("fps", [])})
    return rates[0] if len(rates) == 1 else None  # None: it varies, see each meta.json


def _merge_pose_layout(records: list[dict], with_pose: bool) -> list | None:
    if not with_pose:
        return None
    layouts = sorted({lay for r in records for lay in r["pose_layouts"]})
    if len(layouts) > 1:
        raise ConversionError(f"pose files of different layouts {layouts}: one corpus needs one layout")
    return json.loads(layouts[0]) if layouts else None


def _check_args(frame_size, jpeg_quality, shard_size, splits, fps) -> None:
    if frame_size is not None and (len(frame_size) != 2 or min(frame_size) < 1):
        raise ConversionError(f"frame_size must be (H, W) of positive ints, got {frame_size}")
    if not 1 <= jpeg_quality <= 100:
        raise ConversionError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if shard_size < 1:
        raise ConversionError(f"shard_size must be >= 1, got {shard_size}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ConversionError(f"fps must be positive, got {fps}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ConversionError(f"splits must be among {SPLITS}, got {list(splits)}")


def plan_jobs(corpus: Corpus, out_dir: Path, settings: Settings, splits: tuple[str, ...], pose_dir,
              strict: bool) -> tuple[list[ShardJob], dict[str, list[dict]]]:
    """Read every split's rows (before any work, so that a bad file fails first) and slice them into shards.

    Returns the jobs, in split then shard order, and the skipped entries of malformed rows per split.
    """
    malformed, jobs = {}, []
    for split in splits:
        if pose_dir is not None and not (Path(pose_dir) / split).is_dir():
            raise ConversionError(f"{Path(pose_dir) / split}: no pose folder for split {split!r} (--pose-dir)")
        rows, malformed[split] = corpus.read_split(split)
        if strict and malformed[split]:
            raise ConversionError(malformed[split][0]["reason"])
        for index, first in enumerate(range(0, len(rows), settings.shard_size)):
            jobs.append(ShardJob(split, index, rows[first:first + settings.shard_size], corpus,
                                 Path(pose_dir) / split if pose_dir is not None else None, out_dir, settings, strict))
    return jobs, malformed


def _kept_and_todo(jobs: list[ShardJob], strict: bool) -> tuple[dict, list[ShardJob]]:
    """Records of the shards an earlier run completed, and the jobs left to do."""
    records, todo = {}, []
    for job in jobs:
        record = reusable_record(job)
        if record is None:
            todo.append(job)
            continue
        records[(job.split, job.index)] = record
        if strict and record["skipped"]:
            s = record["skipped"][0]
            raise ConversionError(f"{job.name} (kept from an earlier run) skipped video {s['id']}: {s['reason']}; "
                                  f"delete it to retry")
    return records, todo


def convert_corpus(corpus: Corpus, out_dir: str | os.PathLike, pose_dir: str | os.PathLike | None = None,
                   workers: int | None = None, strict: bool = False, frame_size: tuple[int, int] | None = None,
                   shard_size: int = DEFAULT_SHARD_SIZE, splits=SPLITS, progress: bool = True,
                   jpeg_quality: int = DEFAULT_JPEG_QUALITY, fps: float | None = None, extract_pose: bool = False,
                   config: dict | None = None) -> dict:
    """Convert a corpus to shards + vocab.txt + manifest.json in out_dir; returns the manifest.

    Args:
        corpus: the corpus (PhoenixCorpus, CslDailyCorpus, VideoCorpus).
        out_dir: where shards, vocab.txt and manifest.json go; an existing conversion there is resumed.
        pose_dir: folder of `<split>/<id>.npy` or `.pose` landmark files; None writes RGB only.
        workers: processes converting shards in parallel (default: CPU count); <= 1 converts in this process.
        strict: make every skip (missing/empty folder, malformed row, unreadable frame, missing pose) an error.
        frame_size: (H, W) to store frames at; None keeps the original size.
        shard_size: videos per shard.
        splits: the splits to convert, in order.
        progress: show progress in videos (cslr.io.Progress: a bar on a terminal, else plain lines).
        jpeg_quality: JPEG quality of the stored frames.
        fps: resample every video to this frame rate; None keeps each video's.
        extract_pose: extract MediaPipe Holistic landmarks inline (instead of reading pose_dir).
        config: entries of manifest["config"] that only the caller knows (kind, root, ...).
    """
    if extract_pose and pose_dir is not None:
        raise ConversionError("--extract-pose and --pose-dir exclude each other: extract, or read extracted files")
    splits = tuple(splits)
    frame_size = tuple(int(v) for v in frame_size) if frame_size is not None else None
    fps = float(fps) if fps is not None else None
    _check_args(frame_size, jpeg_quality, shard_size, splits, fps)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    with writing(out_dir / STATE_DIR):
        (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(out_dir)
    settings = Settings(corpus.name, frame_size, jpeg_quality, shard_size, pose_dir is not None or extract_pose,
                        fps, extract_pose)

    jobs, malformed = plan_jobs(corpus, out_dir, settings, splits, pose_dir, strict)
    vocab = Vocabulary.build(corpus.vocab_glosses())

    records, todo = _kept_and_todo(jobs, strict)
    total = sum(len(j.rows) for j in jobs)
    kept = sum(len(j.rows) for j in jobs if (j.split, j.index) in records)
    workers = (os.cpu_count() or 1) if workers is None else workers
    with Progress(total, kept, unit="video", enabled=progress, desc=corpus.name) as bar:
        records.update(run_jobs(todo, min(workers, len(todo)), bar))

    manifest = _build_manifest(corpus, jobs, records, malformed, vocab, settings, config={
        **(config or {}), "pose_dir": str(Path(pose_dir).resolve()) if pose_dir else None,
        "frame_size": list(frame_size) if frame_size else None, "jpeg_quality": jpeg_quality,
        "shard_size": shard_size, "splits": list(splits), "strict": strict,
        **({"fps": fps} if fps is not None else {}), **({"extract_pose": True} if extract_pose else {})})
    with writing(out_dir / VOCAB):
        vocab.save(out_dir / VOCAB)
    with writing(out_dir / MANIFEST):
        atomic_write_json(out_dir / MANIFEST, manifest)
    new_frames = sum(records[(j.split, j.index)]["entry"]["frames"] for j in todo
                     if records[(j.split, j.index)]["entry"])
    print_summary(manifest, out_dir, time.perf_counter() - start, reused=len(jobs) - len(todo),
                  converted=(sum(len(j.rows) for j in todo), new_frames))
    return manifest


def _build_manifest(corpus, jobs, records, malformed, vocab, settings, config) -> dict:
    all_records = [records[(j.split, j.index)] for j in jobs]
    split_info, skipped = {}, {}
    for split in malformed:
        recs = [records[(j.split, j.index)] for j in jobs if j.split == split]
        entries = [r["entry"] for r in recs if r["entry"] is not None]
        split_info[split] = {"num_samples": sum(e["count"] for e in entries),
                             "num_frames": sum(e["frames"] for e in entries), "shards": entries}
        skipped[split] = malformed[split] + [s for r in recs for s in r["skipped"]]
    return {
        "format": "cslr-shards/1", "corpus": corpus.name, "protocol": corpus.protocol,
        "fps": _merge_fps(all_records, corpus, settings.fps),
        "frame_size": _merge_frame_size(all_records, settings.frame_size),
        "modalities": ["rgb", "pose"] if settings.with_pose else ["rgb"],
        "pose_layout": _merge_pose_layout(all_records, settings.with_pose),
        "vocab_size": len(vocab.glosses), "splits": split_info, "skipped": skipped, "config": config,
    }


def print_summary(manifest: dict, out_dir: Path, seconds: float, reused: int, converted: tuple[int, int],
                  file=None) -> None:
    """Videos, frames, shards and skips per split, with the reasons counted, and the wall time and rate."""
    file = file or sys.stdout
    videos = sum(s["num_samples"] for s in manifest["splits"].values())
    frames = sum(s["num_frames"] for s in manifest["splits"].values())
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    n_skip = sum(len(v) for v in manifest["skipped"].values())
    print(f"{manifest['corpus']} -> {out_dir}: {videos} videos, {frames} frames in {shards} shards "
          f"({reused} kept from an earlier run), {n_skip} skipped, vocabulary {manifest['vocab_size']} glosses, "
          f"{seconds:.1f} s ({converted[0] / seconds:.1f} videos/s, {converted[1] / seconds:.0f} frames/s "
          f"converted)", file=file)
    for split, info in manifest["splits"].items():
        reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"][split])
        why = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
        print(f"  {split}: {info['num_samples']} videos, {info['num_frames']} frames, {len(info['shards'])} shards, "
              f"{sum(reasons.values())} skipped" + (f" ({why})" if why else ""), file=file)
        for s in manifest["skipped"][split]:
            print(f"    skipped {s['id']}: {s['reason']}", file=file)


# --------------------------------------------------------------------------------------------- CLI


def add_convert_args(p: argparse.ArgumentParser, frame_size_help: str, with_fps: bool = False) -> None:
    """The options every converter sub-command of launch/prepare.py shares."""
    p.add_argument("--out", required=True, help="output folder (an earlier run there is resumed)")
    p.add_argument("--pose-dir", default=None,
                   help="folder of <split>/<id>.npy or .pose landmarks, (T, 543, 3) or (T, K, C)")
    p.add_argument("--extract-pose", action="store_true",
                   help="extract MediaPipe Holistic landmarks while converting (needs the landmarks extra)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    p.add_argument("--strict", action="store_true", help="make every skipped video an error")
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=None, help=frame_size_help)
    if with_fps:
        p.add_argument("--fps", type=float, default=None, help="resample every video to this frame rate")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="videos per shard")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY)
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to convert")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def convert_kwargs(args: argparse.Namespace) -> dict:
    """convert_corpus keyword arguments from the options of add_convert_args."""
    return dict(pose_dir=args.pose_dir, workers=args.workers, strict=args.strict, frame_size=args.frame_size,
                shard_size=args.shard_size, splits=[s.strip() for s in args.splits.split(",") if s.strip()],
                progress=not args.no_progress, jpeg_quality=args.jpeg_quality, extract_pose=args.extract_pose,
                **({"fps": args.fps} if getattr(args, "fps", None) is not None else {}))
