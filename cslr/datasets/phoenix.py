"""PHOENIX-2014, its signer-independent SI5 split and PHOENIX-2014-T on disk -> WebDataset shards.

    python launch/prepare.py phoenix2014 --root PATH/phoenix2014-release --out data/phoenix2014 --workers 8
    python launch/prepare.py phoenix2014-si5 --root PATH/phoenix2014-release --out data/phoenix2014-si5
    python launch/prepare.py phoenix2014T --root PATH/PHOENIX-2014-T-release-v3 --out data/phoenix2014T \\
        --pose-dir PATH/poses-2014T --frame-size 224 224

What is read (the official layouts; `--root` may also point at the corpus folder itself):

    phoenix2014-release/phoenix-2014-multisigner/annotations/manual/{split}.corpus.csv
        id|folder|signer|annotation            folder = <id>/1/*.png, relative to the frames folder below
    phoenix2014-release/phoenix-2014-multisigner/features/fullFrame-210x260px/{split}/<id>/1/*.png
    phoenix2014-release/phoenix-2014-signerindependent-SI5/annotations/manual/{split}.SI5.corpus.csv (same columns)
    PHOENIX-2014-T-release-v3/PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.{split}.corpus.csv
        name|video|start|end|speaker|orth|translation
    PHOENIX-2014-T-release-v3/PHOENIX-2014-T/features/fullFrame-210x260px/{split}/<name>/*.png
    <pose-dir>/{split}/<id>.npy                (optional) pre-extracted landmarks, (T, 543, 3) MediaPipe Holistic
                                               order, or (T, K, C) of another layout (recorded as ["custom", K])

What is written (see cslr/datasets/schema.py): `{split}-{000000}.tar` shards, one sample per video (gloss.txt with
single spaces, meta.json, rgb.jpgs, pose.npy when --pose-dir is given), `vocab.txt` (the glosses of the train
CSV) and `manifest.json`. Frames are PNG -> (optional resize) -> JPEG. They are kept at the original 260x210
(H x W) unless --frame-size is given; storing them at the training size (e.g. --frame-size 224 224) makes shards
smaller and loading faster, since every epoch then decodes fewer pixels and skips a resize.

Resumable: shard i of a split holds rows [i * shard_size, (i + 1) * shard_size) of that split's well-formed CSV
rows, in CSV order. A shard is written atomically and followed by a small sidecar `.convert/{shard}.json`
(its manifest entry and skipped rows); a rerun keeps every shard whose file and sidecar both exist and match
the rows and settings, and rewrites the rest. A sidecar made with other settings (frame size, JPEG quality,
shard size, pose or not) is an error rather than a silent mix: use a fresh --out. To retry videos a run skipped,
delete the shards that held them.

Bad input: a row whose frame folder is missing or empty, a malformed CSV row (wrong number of fields), a row
without glosses, an unreadable PNG or a missing / unreadable pose file skips the video (listed in
manifest["skipped"] and in the printed summary; --strict makes each an error). A pose file whose frame count
differs from the PNG count is always an error: it means the pose files were extracted from other data.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import queue as queue_lib
import re
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .schema import NUM_LANDMARKS, POSE_LAYOUT, VideoSample
from .vocab import Vocabulary
from cslr.io import atomic_write_json, read_json_record
from .writer import MANIFEST, VOCAB, shard_name, write_shard

FPS = 25
SPLITS = ("train", "dev", "test")
DEFAULT_SHARD_SIZE = 32  # videos: ~45 MB at 260x210, and enough shards for dev/test to spread over ranks x workers
DEFAULT_JPEG_QUALITY = 90
STATE_DIR = ".convert"  # per-shard sidecars, for resuming
FRAMES_DIR = "features/fullFrame-210x260px/{split}"


class ConversionError(ValueError):
    """Input that the converter refuses: the message names the file, row or video and the problem."""


class _Skip(Exception):
    """A video that cannot be converted; its message is the reason recorded in manifest["skipped"]."""


@dataclass(frozen=True)
class CorpusSpec:
    """Where one corpus keeps its annotations and frames, and which CSV columns mean what."""

    name: str  # manifest "corpus", the CLI sub-command
    protocol: str  # manifest "protocol": the scoring rules
    folder: str  # the corpus folder inside the release folder
    csv: str  # a split's annotation file, relative to the corpus folder
    header: tuple[str, ...]
    id_col: str
    gloss_col: str
    signer_col: str
    frame_globs: tuple[str, ...]  # str.format templates over the columns; the first whose folder exists wins
    extra_cols: tuple[str, ...] = ()  # columns copied into meta.json


_PHOENIX2014_HEADER = ("id", "folder", "signer", "annotation")
CORPORA = {
    "phoenix2014": CorpusSpec(
        "phoenix2014", "phoenix2014", "phoenix-2014-multisigner", "annotations/manual/{split}.corpus.csv",
        _PHOENIX2014_HEADER, "id", "annotation", "signer", ("{folder}",)),
    "phoenix2014-si5": CorpusSpec(
        "phoenix2014-si5", "phoenix2014", "phoenix-2014-signerindependent-SI5",
        "annotations/manual/{split}.SI5.corpus.csv",
        _PHOENIX2014_HEADER, "id", "annotation", "signer", ("{folder}",)),
    # 2014-T's `video` column says <name>/1/*.png but the release stores the frames as <split>/<name>/*.png:
    # the shipped layout first, the column as a fallback.
    "phoenix2014T": CorpusSpec(
        "phoenix2014T", "phoenix2014T", "PHOENIX-2014-T", "annotations/manual/PHOENIX-2014-T.{split}.corpus.csv",
        ("name", "video", "start", "end", "speaker", "orth", "translation"), "name", "orth", "speaker",
        ("{name}/*.png", "{video}"), extra_cols=("translation",)),
}


@dataclass(frozen=True)
class Row:
    """One well-formed CSV row."""

    id: str
    gloss: str  # single-spaced
    signer: str
    frame_globs: tuple[str, ...]  # relative to the split's frames folder
    where: str  # "file:line", for messages
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Everything that changes the bytes of a shard; a resumed run must use the same."""

    corpus: str
    frame_size: tuple[int, int] | None  # (H, W); None keeps the original size
    jpeg_quality: int
    shard_size: int
    with_pose: bool

    def as_json(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size) if self.frame_size else None
        return d


@dataclass
class ShardJob:
    split: str
    index: int
    rows: list[Row]
    frames_dir: Path
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


# --------------------------------------------------------------------------------------------- reading the corpus


def frame_sort_key(name: str) -> tuple:
    """Natural order: digit runs compare as integers, so images2.png < images10.png whether or not numbers are
    zero-padded, and the 2014 names `<id>.avi_pid0_fn000123-0.png` sort by frame number. Ties: by name."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def resolve_corpus_dir(root: str | os.PathLike, spec: CorpusSpec) -> Path:
    """The corpus folder, given either it or the release folder that contains it."""
    root = Path(root)
    probe = spec.csv.format(split="train")
    for candidate in (root / spec.folder, root):
        if (candidate / probe).is_file() or (candidate / "annotations").is_dir():
            return candidate
    raise ConversionError(
        f"{root}: not a {spec.name} folder: neither {root / spec.folder / probe} nor {root / probe} exists "
        f"(--root must be the release folder or its {spec.folder} folder)")


def read_corpus_csv(path: Path, spec: CorpusSpec) -> tuple[list[Row], list[dict]]:
    """Parse one annotation file -> (well-formed rows in file order, skipped entries for malformed lines and
    rows without glosses).

    PHOENIX CSVs are `|`-separated without quoting (2014-T translations contain quotes), so a line is split on
    `|`, not read with csv's quoting rules. Raises ConversionError for a missing file, a wrong header, a
    duplicated id or an id with '.' or '/' (which WebDataset keys cannot hold).
    """
    if not path.is_file():
        raise ConversionError(f"{path}: annotation file not found")
    try:
        lines = path.read_text("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path}: not UTF-8 ({e})") from e
    if not lines or tuple(f.strip() for f in lines[0].split("|")) != spec.header:
        got = lines[0] if lines else "an empty file"
        raise ConversionError(f"{path}: header should be {'|'.join(spec.header)!r}, got {got!r}")
    col = {name: i for i, name in enumerate(spec.header)}
    rows, malformed, seen = [], [], {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split("|")
        if len(fields) != len(spec.header):
            malformed.append({"id": f"{path.name}:{lineno}",
                              "reason": f"malformed row: {len(fields)} fields, expected {len(spec.header)} "
                                        f"({where})"})
            continue
        values = {name: fields[i].strip() for name, i in col.items()}
        key = values[spec.id_col]
        if not values[spec.gloss_col].strip():
            malformed.append({"id": key or f"{path.name}:{lineno}",
                              "reason": f"empty annotation: video {key} has no glosses ({where})"})
            continue
        if not key or "." in key or "/" in key:
            raise ConversionError(f"{where}: video id {key!r} is empty or contains '.' or '/', "
                                  f"which a WebDataset key cannot hold")
        if key in seen:
            raise ConversionError(f"{where}: video id {key!r} already used at line {seen[key]}")
        seen[key] = lineno
        rows.append(Row(
            id=key,
            gloss=" ".join(values[spec.gloss_col].split()),
            signer=values[spec.signer_col],
            frame_globs=tuple(t.format(**values) for t in spec.frame_globs),
            where=where,
            extra={c: values[c] for c in spec.extra_cols},
        ))
    return rows, malformed


def find_frames(row: Row, frames_dir: Path) -> tuple[Path, list[Path]]:
    """The row's frame folder and its PNGs in frame order. Raises _Skip for a missing or empty folder."""
    for pattern in row.frame_globs:
        folder = frames_dir / Path(pattern).parent
        if folder.is_dir():
            break
    else:
        raise _Skip(f"missing frame folder: {frames_dir / Path(row.frame_globs[0]).parent}")
    files = [p for p in folder.glob(Path(pattern).name) if p.is_file()]
    if not files:
        raise _Skip(f"empty frame folder: no {Path(pattern).name} in {folder}")
    return folder, sorted(files, key=lambda p: frame_sort_key(p.name))


def pose_layout(num_landmarks: int, channels: int) -> list[list]:
    """MediaPipe Holistic's layout for (543, 3) landmarks; anything else is recorded as ["custom", K]."""
    if (num_landmarks, channels) == (NUM_LANDMARKS, 3):
        return [list(part) for part in POSE_LAYOUT]
    return [["custom", num_landmarks]]


def load_pose(row: Row, pose_dir: Path, frame_folder: Path, num_frames: int) -> np.ndarray:
    """The row's (T, K, C) landmarks; T must equal the number of PNGs."""
    path = pose_dir / f"{row.id}.npy"
    if not path.is_file():
        raise _Skip(f"missing pose file: {path}")
    try:
        pose = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _Skip(f"unreadable pose file: {path} ({e})") from e
    if pose.ndim != 3 or pose.dtype.kind not in "fiu":
        raise ConversionError(f"{path}: pose must be a numeric (T, K, C) array, got {pose.dtype} {pose.shape}")
    if pose.shape[0] != num_frames:
        raise ConversionError(
            f"video {row.id}: pose file {path} has {pose.shape[0]} frames but {frame_folder} has {num_frames} "
            f"PNGs; the pose files belong to other data (another corpus, split or frame rate)")
    return pose


def encode_frame(path: Path, frame_size: tuple[int, int] | None, quality: int) -> tuple[bytes, tuple[int, int]]:
    """PNG file -> (JPEG bytes at frame_size or the original size, original (H, W)). Raises _Skip."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            orig = (im.height, im.width)
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises SyntaxError for some corrupt PNG chunks
        raise _Skip(f"unreadable frame: {path} ({e})") from e
    if frame_size is not None and orig != tuple(frame_size):
        rgb = rgb.resize((frame_size[1], frame_size[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), orig


def load_video(row: Row, job: ShardJob) -> VideoSample:
    """One row -> a VideoSample (JPEG frames, pose when asked). Raises _Skip or ConversionError."""
    folder, files = find_frames(row, job.frames_dir)
    pose = load_pose(row, job.pose_dir, folder, len(files)) if job.pose_dir is not None else None
    jpegs, sizes = [], set()
    for f in files:
        data, orig = encode_frame(f, job.settings.frame_size, job.settings.jpeg_quality)
        jpegs.append(data)
        sizes.add(orig)
    if len(sizes) > 1:
        raise _Skip(f"frames of different sizes {sorted(sizes)} in {folder}")
    orig = sizes.pop()
    stored = job.settings.frame_size or orig
    meta = {"signer": row.signer, "split": job.split, "fps": FPS, "num_frames": len(jpegs),
            "corpus": job.settings.corpus, "orig_size": list(orig), "frame_size": list(stored), **row.extra}
    if pose is not None:
        meta["pose_layout"] = pose_layout(*pose.shape[1:])
    return VideoSample(key=row.id, gloss=row.gloss, meta=meta, jpegs=jpegs, pose=pose)


# --------------------------------------------------------------------------------------------- one shard


def convert_shard(job: ShardJob, on_video: Callable[[], None] | None = None) -> dict:
    """Convert one shard's rows, write the shard (unless every row was skipped) and then its sidecar.

    Returns the sidecar record: settings, row ids, manifest entry (None when empty), skipped rows, stored frame
    sizes and pose layouts seen.
    """
    samples, skipped = [], []
    for row in job.rows:
        try:
            samples.append(load_video(row, job))
        except _Skip as e:
            if job.strict:
                raise ConversionError(f"{row.where}: video {row.id}: {e}") from None
            skipped.append({"id": row.id, "reason": str(e)})
        if on_video is not None:
            on_video()
    entry = write_shard(job.out_dir / job.name, samples) if samples else None
    record = {
        "settings": job.settings.as_json(),
        "ids": [r.id for r in job.rows],
        "entry": entry,
        "skipped": skipped,
        "frame_sizes": sorted({tuple(s.meta["frame_size"]) for s in samples}),
        "pose_layouts": sorted({json.dumps(s.meta["pose_layout"]) for s in samples if "pose_layout" in s.meta}),
    }
    # After the shard: a sidecar exists only next to a complete shard.
    atomic_write_json(job.sidecar, record)
    return record


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
        return None  # the CSV changed under this shard: redo it
    shard = job.out_dir / job.name
    entry = record.get("entry")
    if entry is None:
        return None if shard.exists() else record
    if not shard.is_file() or shard.stat().st_size != entry["bytes"]:
        return None
    return record


_progress_queue = None  # set in pool workers: one item per converted video


def _init_worker(q) -> None:
    global _progress_queue
    _progress_queue = q


def _convert_shard_in_worker(job: ShardJob) -> dict:
    return convert_shard(job, on_video=lambda: _progress_queue.put(1))


def run_jobs(jobs: list[ShardJob], workers: int, bar: tqdm) -> dict[tuple[str, int], dict]:
    """Convert shards in a process pool (in this process when workers <= 1) -> {(split, index): record}."""
    records = {}
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            records[(job.split, job.index)] = convert_shard(job, on_video=lambda: bar.update(1))
        return records
    ctx = mp.get_context()
    q = ctx.Queue()

    def drain():
        while True:
            try:
                bar.update(q.get_nowait())
            except queue_lib.Empty:
                return

    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(q,))
    try:
        pending = {pool.submit(_convert_shard_in_worker, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for fut in done:
                job = pending.pop(fut)
                records[(job.split, job.index)] = fut.result()  # re-raises a worker's error here
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # fail fast; running shards finish atomically
        raise
    pool.shutdown()
    drain()
    return records


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


def _merge_pose_layout(records: list[dict], with_pose: bool) -> list | None:
    if not with_pose:
        return None
    layouts = sorted({lay for r in records for lay in r["pose_layouts"]})
    if len(layouts) > 1:
        raise ConversionError(f"pose files of different layouts {layouts}: one corpus needs one layout")
    return json.loads(layouts[0]) if layouts else None


def _check_args(frame_size, jpeg_quality, shard_size, splits) -> None:
    if frame_size is not None and (len(frame_size) != 2 or min(frame_size) < 1):
        raise ConversionError(f"frame_size must be (H, W) of positive ints, got {frame_size}")
    if not 1 <= jpeg_quality <= 100:
        raise ConversionError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if shard_size < 1:
        raise ConversionError(f"shard_size must be >= 1, got {shard_size}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ConversionError(f"splits must be among {SPLITS}, got {list(splits)}")


def plan_jobs(spec: CorpusSpec, corpus_dir: Path, out_dir: Path, settings: Settings, splits: tuple[str, ...],
              pose_dir, strict: bool) -> tuple[list[ShardJob], dict[str, list[dict]]]:
    """Parse every split's CSV (before any work, so that a bad file fails first) and slice the rows into shards.

    Returns the jobs, in split then shard order, and the skipped entries of malformed rows per split.
    """
    malformed, jobs = {}, []
    for split in splits:
        if pose_dir is not None and not (Path(pose_dir) / split).is_dir():
            raise ConversionError(f"{Path(pose_dir) / split}: no pose folder for split {split!r} (--pose-dir)")
        rows, malformed[split] = read_corpus_csv(corpus_dir / spec.csv.format(split=split), spec)
        if strict and malformed[split]:
            raise ConversionError(malformed[split][0]["reason"])
        for index, first in enumerate(range(0, len(rows), settings.shard_size)):
            jobs.append(ShardJob(split, index, rows[first:first + settings.shard_size],
                                 corpus_dir / FRAMES_DIR.format(split=split),
                                 Path(pose_dir) / split if pose_dir is not None else None,
                                 out_dir, settings, strict))
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


def convert(kind: str, root: str | os.PathLike, out_dir: str | os.PathLike, pose_dir: str | os.PathLike | None = None,
            workers: int | None = None, strict: bool = False, frame_size: tuple[int, int] | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, splits=SPLITS, progress: bool = True,
            jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> dict:
    """Convert a PHOENIX corpus to shards + vocab.txt + manifest.json in out_dir; returns the manifest.

    Args:
        kind: "phoenix2014", "phoenix2014-si5" or "phoenix2014T".
        root: the release folder (phoenix2014-release, PHOENIX-2014-T-release-v3) or the corpus folder in it.
        out_dir: where shards, vocab.txt and manifest.json go; an existing conversion there is resumed.
        pose_dir: folder of `<split>/<id>.npy` landmark files; None writes RGB only.
        workers: processes converting shards in parallel (default: CPU count); <= 1 converts in this process.
        strict: make every skip (missing/empty folder, malformed row, unreadable PNG, missing pose) an error.
        frame_size: (H, W) to store frames at; None keeps the original (260, 210).
        shard_size: videos per shard.
        splits: the splits to convert, in order.
        progress: show a tqdm bar (videos).
        jpeg_quality: JPEG quality of the stored frames.
    """
    if kind not in CORPORA:
        raise ConversionError(f"unknown corpus {kind!r}; choose from {sorted(CORPORA)}")
    splits = tuple(splits)
    frame_size = tuple(int(v) for v in frame_size) if frame_size is not None else None
    _check_args(frame_size, jpeg_quality, shard_size, splits)
    spec = CORPORA[kind]
    start = time.perf_counter()
    corpus_dir = resolve_corpus_dir(root, spec)
    out_dir = Path(out_dir)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    settings = Settings(spec.name, frame_size, jpeg_quality, shard_size, pose_dir is not None)

    jobs, malformed = plan_jobs(spec, corpus_dir, out_dir, settings, splits, pose_dir, strict)
    train_csv = corpus_dir / spec.csv.format(split="train")
    vocab = Vocabulary.build(r.gloss for r in read_corpus_csv(train_csv, spec)[0])

    records, todo = _kept_and_todo(jobs, strict)
    total = sum(len(j.rows) for j in jobs)
    kept = sum(len(j.rows) for j in jobs if (j.split, j.index) in records)
    workers = (os.cpu_count() or 1) if workers is None else workers
    with tqdm(total=total, initial=kept, unit="video", disable=not progress, desc=spec.name) as bar:
        records.update(run_jobs(todo, min(workers, len(todo)), bar))

    manifest = _build_manifest(spec, jobs, records, malformed, vocab, settings, config={
        "kind": kind, "root": str(Path(root).resolve()),
        "pose_dir": str(Path(pose_dir).resolve()) if pose_dir else None,
        "frame_size": list(frame_size) if frame_size else None, "jpeg_quality": jpeg_quality,
        "shard_size": shard_size, "splits": list(splits), "strict": strict})
    vocab.save(out_dir / VOCAB)
    atomic_write_json(out_dir / MANIFEST, manifest)
    new_frames = sum(records[(j.split, j.index)]["entry"]["frames"] for j in todo
                     if records[(j.split, j.index)]["entry"])
    print_summary(manifest, out_dir, time.perf_counter() - start, reused=len(jobs) - len(todo),
                  converted=(sum(len(j.rows) for j in todo), new_frames))
    return manifest


def _build_manifest(spec, jobs, records, malformed, vocab, settings, config) -> dict:
    all_records = [records[(j.split, j.index)] for j in jobs]
    split_info, skipped = {}, {}
    for split in malformed:
        recs = [records[(j.split, j.index)] for j in jobs if j.split == split]
        entries = [r["entry"] for r in recs if r["entry"] is not None]
        split_info[split] = {"num_samples": sum(e["count"] for e in entries),
                             "num_frames": sum(e["frames"] for e in entries), "shards": entries}
        skipped[split] = malformed[split] + [s for r in recs for s in r["skipped"]]
    return {
        "format": "cslr-shards/1", "corpus": spec.name, "protocol": spec.protocol, "fps": FPS,
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


# --------------------------------------------------------------------------------------------- export


def export_phoenix2014(data_dir: str | os.PathLike, release_dir: str | os.PathLike,
                       pose_dir: str | os.PathLike | None = None, splits=SPLITS, compress_level: int = 6) -> Path:
    """Write a prepared shard folder (e.g. a synthetic corpus) back out in the official PHOENIX-2014 layout.

    The inverse of `convert("phoenix2014", ...)`, for benchmarks and tests that need a PNG-per-frame corpus:
    `release_dir/phoenix-2014-multisigner/annotations/manual/{split}.corpus.csv` (id|folder|signer|annotation)
    and `.../features/fullFrame-210x260px/{split}/<id>/1/<id>.avi_pid0_fn000000-0.png`, frames decoded from the
    shards' JPEGs (so not bit-identical to the generator's pixels); with `pose_dir`, the landmarks as float32
    `<pose_dir>/<split>/<id>.npy` (what `convert(..., pose_dir=...)` reads). Returns the corpus folder.

        export_phoenix2014("data/synth_phoenix", "/tmp/phoenix2014-release", pose_dir="/tmp/poses")
        python launch/prepare.py phoenix2014 --root /tmp/phoenix2014-release --out data/p --pose-dir /tmp/poses
    """
    from .pipeline import iter_shard  # the shard reader; a module-level import would tie converting to torch
    from .schema import GLOSS, META, POSE, RGB, decode_pose, unpack_jpegs
    from .writer import load_manifest

    spec = CORPORA["phoenix2014"]
    data_dir, corpus = Path(data_dir), Path(release_dir) / spec.folder
    manifest = load_manifest(data_dir)
    for split in splits:
        lines = ["|".join(spec.header)]
        frames_dir = corpus / FRAMES_DIR.format(split=split)
        for shard in manifest["splits"].get(split, {}).get("shards", []):
            for sample in iter_shard(data_dir / shard["name"]):
                key, meta = sample["__key__"], json.loads(sample[META])
                folder = frames_dir / key / "1"
                folder.mkdir(parents=True, exist_ok=True)
                for i, jpeg in enumerate(unpack_jpegs(sample[RGB])):
                    with Image.open(io.BytesIO(jpeg)) as im:
                        im.convert("RGB").save(folder / f"{key}.avi_pid0_fn{i:06d}-0.png",
                                               compress_level=compress_level)
                if pose_dir is not None and POSE in sample:
                    (Path(pose_dir) / split).mkdir(parents=True, exist_ok=True)
                    np.save(Path(pose_dir) / split / f"{key}.npy", decode_pose(sample[POSE]).astype(np.float32))
                gloss = sample[GLOSS].decode("utf-8")
                lines.append(f"{key}|{key}/1/*.png|{meta.get('signer', '')}|{gloss}")
        csv = corpus / spec.csv.format(split=split)
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("\n".join(lines) + "\n", "utf-8")
    return corpus


# --------------------------------------------------------------------------------------------- CLI


def add_cli(subparsers) -> None:
    """Register the phoenix2014, phoenix2014-si5 and phoenix2014T sub-commands of launch/prepare.py."""
    roots = {"phoenix2014": "phoenix2014-release (or its phoenix-2014-multisigner folder)",
             "phoenix2014-si5": "phoenix2014-release (or its phoenix-2014-signerindependent-SI5 folder)",
             "phoenix2014T": "PHOENIX-2014-T-release-v3 (or its PHOENIX-2014-T folder)"}
    for kind, root_help in roots.items():
        p = subparsers.add_parser(kind, help=f"convert {kind} to shards", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--root", required=True, help=f"the corpus: {root_help}")
        p.add_argument("--out", required=True, help="output folder (an earlier run there is resumed)")
        p.add_argument("--pose-dir", default=None,
                       help="folder of <split>/<id>.npy landmarks, (T, 543, 3) or (T, K, C)")
        p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
        p.add_argument("--strict", action="store_true", help="make every skipped video an error")
        p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                       help="store frames at H x W (default: original 260 x 210); the training size loads faster")
        p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="videos per shard")
        p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY)
        p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to convert")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_main, kind=kind)


def _main(args: argparse.Namespace) -> int:
    try:
        convert(args.kind, args.root, args.out, pose_dir=args.pose_dir, workers=args.workers, strict=args.strict,
                frame_size=args.frame_size, shard_size=args.shard_size,
                splits=[s.strip() for s in args.splits.split(",") if s.strip()],
                progress=not args.no_progress, jpeg_quality=args.jpeg_quality)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
