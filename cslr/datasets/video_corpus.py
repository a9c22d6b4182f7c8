"""Your own corpus: video files (any container PyAV reads: mp4, webm, avi, mov, mkv) + one annotation CSV ->
WebDataset shards in the same schema as PHOENIX.

    python launch/prepare.py videos --annotations ANN.csv --videos DIR --out data/mine \\
        [--frame-size 224 224] [--fps 25] [--extract-pose | --pose-dir DIR] [--workers N] [--strict]

The annotation file is a comma-separated CSV (standard quoting, UTF-8) whose header names at least these
columns, in any order; one row per video:

    id,path,split,signer,glosses
    v0001,signer1/v0001.mp4,train,signer1,HELLO HOW YOU
    v0002,/abs/path/v0002.webm,dev,signer2,"THANK YOU"

- `id`: the sample key; unique, without '.' or '/' (WebDataset splits member names at a dot).
- `path`: the video file, relative to --videos (or absolute).
- `split`: train, dev or test.
- `signer`: any string (per-signer WER tables group by it).
- `glosses`: the gloss sequence, separated by whitespace (stored single-spaced).
Further columns are copied into each sample's meta.json (e.g. a `translation`).

Frames are decoded with PyAV (cslr/datasets/video.py), optionally resampled to --fps (meta.json records the
rate of the stored frames; manifest["fps"] is that rate, or None when videos differ and no --fps was given) and
resized to --frame-size. Bad input follows the PHOENIX converter's rules (cslr/datasets/convert.py): a
malformed row, an unknown split, a row without glosses, a missing file and an unreadable, truncated or
zero-frame video are skipped, counted and listed in manifest["skipped"] (--strict: an error naming the row and
the file); finished shards are kept when a conversion is rerun. Scored with the "plain" protocol.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .convert import (SPLITS, ConversionError, Corpus, FrameSource, Row, Skip, add_convert_args, claim_key, convert_corpus,
                      convert_kwargs, video_file_source)
from .video import VideoError, open_frames

COLUMNS = ("id", "path", "split", "signer", "glosses")


@dataclass(frozen=True)
class VideoCorpus(Corpus):
    """A CSV of (id, path, split, signer, glosses) rows over a folder of video files."""

    annotations: Path
    videos: Path
    name: str = "videos"
    protocol: str = "plain"
    fps: float | None = None  # varies per video

    @classmethod
    def open(cls, annotations: str | os.PathLike, videos: str | os.PathLike) -> "VideoCorpus":
        annotations, videos = Path(annotations), Path(videos)
        if not annotations.is_file():
            raise ConversionError(f"{annotations}: annotation file not found")
        if not videos.is_dir():
            raise ConversionError(f"{videos}: video folder not found (--videos)")
        return cls(annotations, videos)

    def read_all(self) -> dict[str, tuple[list[Row], list[dict]]]:
        """{split: (rows in file order, malformed entries)} for every split. Raises ConversionError."""
        path = self.annotations
        try:
            text = path.read_text("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConversionError(f"{path}: not UTF-8 ({e})") from e
        reader = csv.reader(text.splitlines())
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing or len(set(header)) != len(header):
            raise ConversionError(f"{path}: the header must name the columns {','.join(COLUMNS)} once each "
                                  f"(missing {missing}); got {','.join(header) or 'an empty file'!r}")
        col = {name: i for i, name in enumerate(header)}
        out = {s: ([], []) for s in SPLITS}
        seen = {}
        for lineno, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
            where = f"{path}:{lineno}"
            values = {name: fields[i].strip() for name, i in col.items() if i < len(fields)}
            key, split = values.get("id", ""), values.get("split", "")
            bad = None
            if len(fields) != len(header):
                bad = f"malformed row: {len(fields)} fields, expected {len(header)} ({where})"
            elif split not in SPLITS:
                bad = f"unknown split {split!r} of video {key}, expected one of {', '.join(SPLITS)} ({where})"
            elif not values["glosses"].split():
                bad = f"empty annotation: video {key} has no glosses ({where})"
            if bad is not None:
                out[split if split in SPLITS else "train"][1].append({"id": key or f"{path.name}:{lineno}",
                                                                      "reason": bad})
                continue
            claim_key(key, where, seen, lineno)
            out[split][0].append(Row(id=key, gloss=" ".join(values["glosses"].split()), signer=values["signer"],
                                     source=(values["path"],), where=where,
                                     extra={c: values[c] for c in header if c not in COLUMNS}))
        return out

    def read_split(self, split: str) -> tuple[list[Row], list[dict]]:
        return self.read_all()[split]

    def video_path(self, row: Row) -> Path:
        return self.videos / row.source[0]  # an absolute path replaces the folder

    def frames(self, row: Row, split: str, fps: float | None = None) -> FrameSource:
        path = self.video_path(row)
        if not path.is_file():
            raise Skip(f"missing video: {path}")
        try:
            info, frames = open_frames(path, fps)  # one opening: the first frame, decoded for the rotation, is kept
        except VideoError as e:
            raise Skip(f"unreadable video: {e}") from e
        return video_file_source(path, fps, src_fps=info.fps, src_frames=info.frames, frames=frames)


def add_cli(subparsers) -> None:
    """Register the `videos` sub-command of launch/prepare.py."""
    p = subparsers.add_parser("videos", help="convert your own video files + annotation CSV to shards",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, help="CSV with the header id,path,split,signer,glosses")
    p.add_argument("--videos", required=True, help="folder the CSV's paths are relative to")
    add_convert_args(p, "store frames at H x W (default: the videos' size, which must then be one size)",
                     with_fps=True)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        corpus = VideoCorpus.open(args.annotations, args.videos)
        convert_corpus(corpus, args.out, config={"kind": "videos", "annotations": str(Path(args.annotations).resolve()),
                                                 "videos": str(Path(args.videos).resolve())}, **convert_kwargs(args))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
