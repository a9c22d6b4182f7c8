"""CSL-Daily (Chinese Sign Language, 20,654 videos, 30 fps) -> WebDataset shards.

    python launch/prepare.py csl-daily --root PATH/CSL-Daily --out data/csl-daily [--frame-size 224 224] \\
        [--pose-dir DIR | --extract-pose] [--workers N] [--strict]

What is read -- the release as the public CSLR code reads it (CorrNet's preprocess/dataset_preprocess-CSL-Daily.py,
the SLRT / TwoStream-SLR data loaders):

    CSL-Daily/sentence/frames_512x512/<name>/*.jpg      one folder of 512x512 JPEGs per video (also accepted:
                                                        sentence_frames-512x512/frames_512x512/<name>/*.jpg)
    CSL-Daily/sentence_label/csl2020ct_v2.pkl           a dict whose `info` is a list of {name, length,
                                                        label_gloss (list), label_char (list), label_word,
                                                        signer (int, from 0), ...}
    CSL-Daily/sentence_label/split_1.txt                `name|split` lines after a `name|split` header;
                                                        split is train, dev or test

Each sample: key = name, gloss.txt = label_gloss joined by single spaces, meta.json signer = the signer id as a
string and `translation` = label_char joined. Order: the pickle's within each split. A video of the pickle
that split_1.txt does not list goes to train, as CorrNet's preprocessing does (the release has one such name);
a name of split_1.txt missing from the pickle is skipped and listed. Scored with the "plain" protocol.

The pickle is the one exception to "nothing from a download is unpickled": it is read with a restricted
unpickler that admits only builtin containers, strings and numbers (`find_class` refuses every global, so no
code from the file can run); a pickle that needs anything else is an error naming the file and the global.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

from .convert import (SPLITS, ConversionError, Corpus, FrameSource, Row, Skip, add_convert_args, convert_corpus,
                      convert_kwargs, frame_sort_key, image_folder_source)

FPS = 30
FRAME_DIRS = ("sentence/frames_512x512", "sentence_frames-512x512/frames_512x512")
LABELS = "sentence_label/csl2020ct_v2.pkl"
SPLIT_FILE = "sentence_label/split_1.txt"
# The only globals a protocol-2 pickle needs for builtin containers (protocols 4+ have opcodes for them).
_SAFE_GLOBALS = {("builtins", n) for n in ("set", "frozenset", "list", "dict", "tuple", "str", "int", "float",
                                           "bool", "complex", "bytes", "bytearray")}
_SAFE_GLOBALS |= {("__builtin__", n) for _, n in _SAFE_GLOBALS} | {("__builtin__", "unicode"), ("__builtin__", "long")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only builtin containers, strings and numbers; any other global is refused."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="utf-8")
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise ConversionError(f"{self.where}: refusing to unpickle {module}.{name}: the annotation pickle may hold "
                              f"only builtin containers, strings and numbers")


def safe_load_pickle(path: str | os.PathLike):
    """Unpickle a file with the restricted unpickler. Raises ConversionError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e})") from e
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except ConversionError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError ... on a damaged file
        raise ConversionError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


@functools.lru_cache(maxsize=4)
def _read_labels(labels: Path, split_file: Path) -> dict[str, tuple[list[Row], list[dict]]]:
    info = safe_load_pickle(labels)
    entries = info.get("info") if isinstance(info, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConversionError(f"{labels}: expected a dict whose 'info' is a list of dicts (name, label_gloss, "
                              f"signer, ...), got {type(info).__name__}")
    if not split_file.is_file():
        raise ConversionError(f"{split_file}: split file not found")
    lines = split_file.read_text("utf-8-sig").splitlines()
    if not lines or lines[0].strip() != "name|split":
        raise ConversionError(f"{split_file}: header should be 'name|split', got {lines[0] if lines else ''!r}")
    split_of, out = {}, {s: ([], []) for s in SPLITS}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 2 or fields[1] not in SPLITS:
            raise ConversionError(f"{split_file}:{lineno}: expected name|train, name|dev or name|test, got {line!r}")
        split_of[fields[0]] = fields[1]
    seen = set()
    for i, e in enumerate(entries):
        name = str(e.get("name", ""))
        where = f"{labels}:info[{i}]"
        if not name or "." in name or "/" in name or name in seen:
            raise ConversionError(f"{where}: video name {name!r} is empty, repeated or contains '.' or '/'")
        seen.add(name)
        split = split_of.get(name, "train")  # unlisted: train, as CorrNet's preprocessing does
        gloss = e.get("label_gloss", [])
        gloss = " ".join(gloss.split() if isinstance(gloss, str) else (str(g) for g in gloss))
        if not gloss.strip():
            out[split][1].append({"id": name, "reason": f"empty annotation: video {name} has no glosses ({where})"})
            continue
        chars = e.get("label_char", [])
        out[split][0].append(Row(id=name, gloss=" ".join(gloss.split()), signer=str(e.get("signer", "")),
                                 source=(name,), where=where,
                                 extra={"translation": "".join(map(str, chars)) if isinstance(chars, list)
                                        else str(chars)}))
    for name, split in split_of.items():
        if name not in seen:
            out[split][1].append({"id": name, "reason": f"not in {labels.name}: {split_file} lists video {name}"})
    return out


@dataclass(frozen=True)
class CslDailyCorpus(Corpus):
    root: Path
    frames_dir: Path
    name: str = "csl-daily"
    protocol: str = "plain"
    fps: float = FPS

    @classmethod
    def open(cls, root: str | os.PathLike) -> "CslDailyCorpus":
        root = Path(root)
        if not (root / LABELS).is_file():
            raise ConversionError(f"{root}: not a CSL-Daily folder: {root / LABELS} not found (--root must be the "
                                  f"folder holding sentence/ and sentence_label/)")
        for d in FRAME_DIRS:
            if (root / d).is_dir():
                return cls(root, root / d)
        raise ConversionError(f"{root}: no frame folder ({' or '.join(str(root / d) for d in FRAME_DIRS)})")

    def read_split(self, split: str) -> tuple[list[Row], list[dict]]:
        return _read_labels(self.root / LABELS, self.root / SPLIT_FILE)[split]

    def frames(self, row: Row, split: str, fps: float | None = None) -> FrameSource:
        folder = self.frames_dir / row.source[0]
        if not folder.is_dir():
            raise Skip(f"missing frame folder: {folder}")
        files = sorted((p for p in folder.glob("*.jpg") if p.is_file()), key=lambda p: frame_sort_key(p.name))
        if not files:
            raise Skip(f"empty frame folder: no *.jpg in {folder}")
        return image_folder_source(folder, files, FPS, fps, unit="JPEGs")


def add_cli(subparsers) -> None:
    """Register the `csl-daily` sub-command of launch/prepare.py."""
    p = subparsers.add_parser("csl-daily", help="convert CSL-Daily to shards", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the CSL-Daily folder (holding sentence/ and sentence_label/)")
    add_convert_args(p, "store frames at H x W (default: the original 512 x 512)", with_fps=True)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        corpus = CslDailyCorpus.open(args.root)
        convert_corpus(corpus, args.out, config={"kind": "csl-daily", "root": str(Path(args.root).resolve())},
                       **convert_kwargs(args))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
