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
    <pose-dir>/{split}/<id>.npy or <id>.pose   (optional) pre-extracted landmarks, (T, 543, 3) MediaPipe Holistic
                                               order, or (T, K, C) of another layout (recorded as ["custom", K]);
                                               or --extract-pose: MediaPipe Holistic while converting

What is written (see cslr/datasets/schema.py and, for resuming and skipping, cslr/datasets/convert.py): `{split}-{000000}.tar` shards, one sample per video (gloss.txt with
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
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .convert import (  # noqa: F401  (ConversionError, frame_sort_key: part of this module's interface)
    DEFAULT_JPEG_QUALITY, DEFAULT_SHARD_SIZE, SPLITS, ConversionError, Corpus, FrameSource, Row, Skip,
    add_convert_args, claim_key, convert_corpus, convert_kwargs, frame_sort_key, image_folder_source)
from .schema import GLOSS, META, POSE, RGB, decode_pose, unpack_jpegs
from .shards import iter_shard
from .writer import load_manifest

FPS = 25
FRAMES_DIR = "features/fullFrame-210x260px/{split}"


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


# --------------------------------------------------------------------------------------------- reading the corpus


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
        claim_key(key, where, seen, lineno)
        rows.append(Row(
            id=key,
            gloss=" ".join(values[spec.gloss_col].split()),
            signer=values[spec.signer_col],
            source=tuple(t.format(**values) for t in spec.frame_globs),
            where=where,
            extra={c: values[c] for c in spec.extra_cols},
        ))
    return rows, malformed


def find_frames(row: Row, frames_dir: Path) -> tuple[Path, list[Path]]:
    """The row's frame folder and its PNGs in frame order. Raises Skip for a missing or empty folder."""
    for pattern in row.source:
        folder = frames_dir / Path(pattern).parent
        if folder.is_dir():
            break
    else:
        raise Skip(f"missing frame folder: {frames_dir / Path(row.source[0]).parent}")
    files = [p for p in folder.glob(Path(pattern).name) if p.is_file()]
    if not files:
        raise Skip(f"empty frame folder: no {Path(pattern).name} in {folder}")
    return folder, sorted(files, key=lambda p: frame_sort_key(p.name))


@dataclass(frozen=True)
class PhoenixCorpus(Corpus):
    """One PHOENIX corpus folder on disk: its split CSVs and PNG frame folders."""

    spec: CorpusSpec
    corpus_dir: Path
    fps: float = FPS

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @classmethod
    def open(cls, kind: str, root: str | os.PathLike) -> "PhoenixCorpus":
        if kind not in CORPORA:
            raise ConversionError(f"unknown corpus {kind!r}; choose from {sorted(CORPORA)}")
        return cls(CORPORA[kind], resolve_corpus_dir(root, CORPORA[kind]))

    def read_split(self, split: str) -> tuple[list[Row], list[dict]]:
        return read_corpus_csv(self.corpus_dir / self.spec.csv.format(split=split), self.spec)

    def frames(self, row: Row, split: str, fps: float | None = None) -> FrameSource:
        folder, files = find_frames(row, self.corpus_dir / FRAMES_DIR.format(split=split))
        return image_folder_source(folder, files, FPS, fps, unit="PNGs")


def convert(kind: str, root: str | os.PathLike, out_dir: str | os.PathLike, pose_dir: str | os.PathLike | None = None,
            workers: int | None = None, strict: bool = False, frame_size: tuple[int, int] | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, splits=SPLITS, progress: bool = True,
            jpeg_quality: int = DEFAULT_JPEG_QUALITY, extract_pose: bool = False) -> dict:
    """Convert a PHOENIX corpus to shards + vocab.txt + manifest.json in out_dir; returns the manifest.

    Args:
        kind: "phoenix2014", "phoenix2014-si5" or "phoenix2014T".
        root: the release folder (phoenix2014-release, PHOENIX-2014-T-release-v3) or the corpus folder in it.
        out_dir: where shards, vocab.txt and manifest.json go; an existing conversion there is resumed.
        pose_dir: folder of `<split>/<id>.npy` (or `.pose`) landmark files; None writes RGB only.
        workers: processes converting shards in parallel (default: CPU count); <= 1 converts in this process.
        strict: make every skip (missing/empty folder, malformed row, unreadable PNG, missing pose) an error.
        frame_size: (H, W) to store frames at; None keeps the original (260, 210).
        shard_size: videos per shard.
        splits: the splits to convert, in order.
        progress: show a tqdm bar (videos).
        jpeg_quality: JPEG quality of the stored frames.
        extract_pose: extract MediaPipe Holistic landmarks while converting (cslr/datasets/landmarks.py).
    """
    corpus = PhoenixCorpus.open(kind, root)
    return convert_corpus(corpus, out_dir, pose_dir=pose_dir, workers=workers, strict=strict, frame_size=frame_size,
                          shard_size=shard_size, splits=splits, progress=progress, jpeg_quality=jpeg_quality,
                          extract_pose=extract_pose, config={"kind": kind, "root": str(Path(root).resolve())})


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
        add_convert_args(p, "store frames at H x W (default: original 260 x 210); the training size loads faster")
        p.set_defaults(func=_main, kind=kind)


def _main(args: argparse.Namespace) -> int:
    try:
        kwargs = convert_kwargs(args)
        corpus = PhoenixCorpus.open(args.kind, args.root)
        convert_corpus(corpus, args.out, config={"kind": args.kind, "root": str(Path(args.root).resolve())},
                       **kwargs)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
