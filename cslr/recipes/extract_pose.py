"""MediaPipe Holistic landmarks of a whole corpus, one file per video, split over processes, ranks and Slurm
array tasks: `<out>/<split>/<id>.npy` (float16 (T, 543, 3)), exactly what `prepare.py --pose-dir` reads.

    python launch/extract_pose.py --corpus phoenix2014 --root PATH/phoenix2014-release --out poses/phoenix2014
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 4 launch/extract_pose.py ...
    sbatch --array=0-49 launch/slurm/extract_pose.sbatch --corpus phoenix2014 --root ... --out ...
    python launch/extract_pose.py --corpus phoenix2014 --root ... --out poses/phoenix2014 --verify

- Work split: the corpus's videos in a fixed order (splits train, dev, test; each in annotation order) are dealt
  round-robin over `count` slots, slot = array_task * WORLD_SIZE + RANK of `SLURM_ARRAY_TASK_COUNT * WORLD_SIZE`
  (array task = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP): every video goes to exactly
  one slot for any count. `--workers N` processes share a slot's videos.
- Each file is written atomically (cslr.io): a file that exists is complete, so a rerun (a requeued or resubmitted
  task) skips it and does the rest.
- A video that cannot be read (missing or empty frame folder, unreadable image, corrupt or truncated video) is an
  error naming it; with `skip_bad` it is skipped, counted and listed. Either way each slot writes a JSON report
  `<out>/.extract/task-<slot>-of-<count>.json` (videos done, kept, bad, frames, frames/s).
- `verify` checks every video's file (all slots): missing, unreadable, not (T, 543, 3), or T different from the
  frame count of an image-folder corpus; returns the problems.
"""

from __future__ import annotations

import os
import time
from functools import partial
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cslr.datasets.convert import SPLITS, ConversionError, Corpus, Row, Skip
from cslr.datasets.corpora import open_corpus
from cslr.datasets.pool import run_pool
from cslr.datasets.landmarks import Holistic, holistic_module
from cslr.datasets.posefile import PoseFileError, load_landmarks, npy_bytes, pose_file_bytes
from cslr.datasets.schema import NUM_LANDMARKS
from cslr.io import Progress, atomic_write_bytes, atomic_write_json

REPORT_DIR = ".extract"
FORMATS = ("npy", "pose")


class ExtractError(RuntimeError):
    """A video that could not be extracted (without skip_bad), or a bad task setting; names the video/setting."""


@dataclass
class ExtractConfig:
    """What to extract, where to, and which share of the work this process does."""

    corpus: str  # phoenix2014 | phoenix2014-si5 | phoenix2014T | csl-daily | videos
    out: str
    root: str | None = None
    annotations: str | None = None  # videos: the CSV
    videos: str | None = None  # videos: the folder
    fmt: str = "npy"  # npy | pose
    fps: float | None = None  # resample videos (must match prepare.py's --fps)
    workers: int = 1
    skip_bad: bool = False
    splits: tuple[str, ...] = SPLITS
    task_index: int | None = None  # override the slot (default: from Slurm and accelerate's environment)
    num_tasks: int | None = None
    progress: bool = True
    log_every: float = 30.0  # seconds between progress lines when stdout is not a terminal


@dataclass(frozen=True)
class Item:
    split: str
    row: Row


@dataclass
class Report:
    corpus: str
    task: int
    tasks: int
    format: str
    assigned: int = 0
    kept: int = 0  # finished by an earlier run
    done: list = field(default_factory=list)  # "split/id" extracted now
    bad: list = field(default_factory=list)  # {split, id, reason}
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------------------------- the work split


def _env_int(env, name: str, default: int | None = None) -> int | None:
    value = env.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ExtractError(f"{name}={value!r} is not an integer") from None


def task_slot(env=None, task_index: int | None = None, num_tasks: int | None = None) -> tuple[int, int]:
    """(slot, count) of this process: Slurm array task x accelerate rank, or the explicit override."""
    env = os.environ if env is None else env
    rank, world = _env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1)
    if task_index is not None or num_tasks is not None:
        array_index, array_count = task_index or 0, num_tasks or 1
    elif _env_int(env, "SLURM_ARRAY_TASK_ID") is not None:
        task_id = _env_int(env, "SLURM_ARRAY_TASK_ID")
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP", 1) or 1
        array_count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", 1)
        array_index, rest = divmod(task_id - first, step)
        if rest or not 0 <= array_index < array_count:
            raise ExtractError(
                f"Slurm array task {task_id} is not task {array_index} of a contiguous array of {array_count} "
                f"(min {first}, step {step}); submit a contiguous range, e.g. --array=0-{array_count - 1}")
    else:
        array_index, array_count = 0, 1
    if not (0 <= array_index < array_count and 0 <= rank < world):
        raise ExtractError(f"task {array_index} of {array_count}, rank {rank} of {world}: out of range")
    return array_index * world + rank, array_count * world


def list_items(corpus: Corpus, splits=SPLITS) -> list[Item]:
    """Every well-formed video of the splits, in the fixed order every task computes alike."""
    return [Item(split, row) for split in splits for row in corpus.read_split(split)[0]]


def share(items: list, slot: int, count: int) -> list:
    """This slot's videos: every count-th, starting at slot (each video in exactly one slot)."""
    return items[slot::count]


def output_path(out: str | os.PathLike, item: Item, fmt: str) -> Path:
    return Path(out) / item.split / f"{item.row.id}.{fmt}"


# --------------------------------------------------------------------------------------------- one video


def extract_video(corpus: Corpus, item: Item, out: str, fmt: str, fps: float | None) -> int:
    """Extract one video's landmarks and write its file atomically; returns its frame count. Raises Skip."""
    source = corpus.frames(item.row, item.split, fps)
    rows, size = [], None
    with Holistic() as holistic:
        for rgb in source.frames:
            size = size or rgb.shape[:2]
            rows.append(holistic(rgb))
    if not rows:
        raise Skip(f"no frames in {source.where}")
    pose = np.stack(rows).astype(np.float16)
    path = output_path(out, item, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = npy_bytes(pose) if fmt == "npy" else pose_file_bytes(pose, width=size[1], height=size[0], fps=source.fps)
    atomic_write_bytes(path, data)
    return len(rows)


def _run_one(corpus: Corpus, out: str, fmt: str, fps: float | None, item: Item, on_video=None
             ) -> tuple[Item, int, str | None]:
    """(item, frames, error reason or None): a `run_pool` job, in a pool worker or inline."""
    try:
        return item, extract_video(corpus, item, out, fmt, fps), None
    except Skip as e:
        return item, 0, str(e)


# --------------------------------------------------------------------------------------------- the task


def _remove_own_temps(out: Path, items: list[Item], fmt: str) -> None:
    """Temp files an interrupted run left for this slot's videos (other slots' may be in flight: not touched)."""
    mine = {(i.split, f".{i.row.id}.{fmt}.tmp-") for i in items}
    for split in {i.split for i in items}:
        folder = out / split
        if folder.is_dir():
            for p in folder.glob(f".*.{fmt}.tmp-*"):
                if (split, p.name.split(".tmp-")[0] + ".tmp-") in mine:
                    p.unlink(missing_ok=True)


def extract(cfg: ExtractConfig, env=None) -> Report:
    """Extract this slot's share of the corpus. Raises ExtractError (a bad video without skip_bad, a bad setting)
    or ConversionError (a corpus in the wrong layout); finished files stay either way."""
    if cfg.fmt not in FORMATS:
        raise ExtractError(f"format must be one of {FORMATS}, got {cfg.fmt!r}")
    holistic_module()  # fail now, with the install command, if MediaPipe is missing
    slot, count = task_slot(env, cfg.task_index, cfg.num_tasks)
    corpus = open_corpus(cfg.corpus, cfg.root, cfg.annotations, cfg.videos)
    out = Path(cfg.out)
    mine = share(list_items(corpus, cfg.splits), slot, count)
    for split in cfg.splits:  # every split's folder, even an empty one: prepare.py --pose-dir expects them
        (out / split).mkdir(parents=True, exist_ok=True)
    _remove_own_temps(out, mine, cfg.fmt)
    todo = [i for i in mine if not output_path(out, i, cfg.fmt).is_file()]
    report = Report(cfg.corpus, slot, count, cfg.fmt, assigned=len(mine), kept=len(mine) - len(todo))
    main = (env or os.environ).get("RANK", "0") in ("", "0")
    # a tqdm bar on a terminal, else a plain line every log_every seconds (a Slurm log)
    progress = Progress(len(mine), report.kept, desc=f"extract_pose {slot + 1}/{count}", unit="videos",
                        enabled=cfg.progress and main, every_s=cfg.log_every)
    start = time.perf_counter()

    def record(item: Item, frames: int, reason: str | None) -> None:
        if reason is not None:
            if not cfg.skip_bad:
                raise ExtractError(f"{item.split}/{item.row.id} ({item.row.where}): {reason} "
                                   f"(--skip-bad skips such videos and lists them)")
            report.bad.append({"split": item.split, "id": item.row.id, "reason": reason})
        else:
            report.done.append(f"{item.split}/{item.row.id}")
            report.frames += frames
        rate = report.frames / max(time.perf_counter() - start, 1e-9)
        progress.update(1, frames=report.frames, **{"frames/s": f"{rate:.1f}"}, bad=len(report.bad))

    try:  # workers that exit with this process (cslr.datasets.pool); each video recorded as it ends
        run_pool(partial(_run_one, corpus, cfg.out, cfg.fmt, cfg.fps), todo, cfg.workers,
                 on_result=lambda item, result: record(*result))
    finally:
        progress.close()
        report.seconds = time.perf_counter() - start
        write_report(out, report)
    return report


def write_report(out: Path, report: Report) -> Path:
    path = out / REPORT_DIR / f"task-{report.task:05d}-of-{report.tasks:05d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**asdict(report), "frames_per_s": round(report.frames_per_s, 2)})
    return path


def summary(report: Report) -> str:
    lines = [f"extract_pose task {report.task + 1}/{report.tasks} ({report.corpus}, .{report.format}): "
             f"{report.assigned} videos assigned, {len(report.done)} extracted, {report.kept} kept from an earlier "
             f"run, {len(report.bad)} bad; {report.frames} frames in {report.seconds:.1f} s "
             f"({report.frames_per_s:.1f} frames/s)"]
    lines += [f"  bad {b['split']}/{b['id']}: {b['reason']}" for b in report.bad]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- verify


def verify(cfg: ExtractConfig) -> tuple[int, list[str]]:
    """Check every video's file (all slots) -> (videos checked, problems: 'missing ...' / 'malformed ...')."""
    corpus = open_corpus(cfg.corpus, cfg.root, cfg.annotations, cfg.videos)
    items = list_items(corpus, cfg.splits)
    problems = []
    for item in items:
        path = output_path(cfg.out, item, cfg.fmt)
        if not path.is_file():
            problems.append(f"missing {item.split}/{item.row.id}: {path}")
            continue
        try:
            pose = load_landmarks(path)
        except PoseFileError as e:
            problems.append(f"malformed {item.split}/{item.row.id}: {e}")
            continue
        if pose.ndim != 3 or pose.shape[1:] != (NUM_LANDMARKS, 3) or pose.shape[0] == 0:
            problems.append(f"malformed {item.split}/{item.row.id}: {path}: shape {pose.shape}, expected "
                            f"(T >= 1, {NUM_LANDMARKS}, 3)")
            continue
        expected = _frame_count(corpus, item, cfg.fps)
        if expected is not None and expected != pose.shape[0]:
            problems.append(f"malformed {item.split}/{item.row.id}: {path}: {pose.shape[0]} frames, the video has "
                            f"{expected}")
    return len(items), problems


def _frame_count(corpus: Corpus, item: Item, fps: float | None) -> int | None:
    """The frame count of a video: a directory listing for image folders, the container's count for files."""
    try:
        source = corpus.frames(item.row, item.split, fps)
    except (Skip, ConversionError):
        return None
    return source.count
