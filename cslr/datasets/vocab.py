"""Gloss vocabulary: `vocab.txt` holds one gloss per line; id 0 is the CTC blank, gloss i of the file is i + 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from cslr.io import atomic_write_bytes

BLANK = "<blank>"
BLANK_ID = 0


class Vocabulary:
    def __init__(self, glosses: Iterable[str]):
        self.glosses = list(glosses)
        if len(set(self.glosses)) != len(self.glosses):
            raise ValueError("vocabulary has duplicate glosses")
        for g in self.glosses:
            if not g or any(c.isspace() for c in g):
                raise ValueError(f"vocabulary gloss {g!r} is empty or contains white space")
        self.index = {g: i + 1 for i, g in enumerate(self.glosses)}

    @classmethod
    def build(cls, sentences: Iterable[str]) -> "Vocabulary":
        """A sorted vocabulary of every gloss in `sentences` (space-separated strings)."""
        return cls(sorted({g for s in sentences for g in s.split()}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vocabulary file not found")
        try:  # utf-8-sig: a byte-order mark written by an editor must not become part of the first gloss
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from e
        glosses = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not glosses:
            raise ValueError(f"{path}: empty vocabulary (no glosses)")
        try:
            return cls(glosses)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, ("\n".join(self.glosses) + "\n").encode("utf-8"))

    def __len__(self) -> int:
        """Number of classes including the blank."""
        return len(self.glosses) + 1

    def __contains__(self, gloss: str) -> bool:
        return gloss in self.index

    def encode(self, sentence: str) -> tuple[list[int], list[str]]:
        """Space-separated glosses -> (ids, unknown glosses). Unknown glosses are left out and returned."""
        ids, unknown = [], []
        for g in sentence.split():
            i = self.index.get(g)
            if i is None:
                unknown.append(g)
            else:
                ids.append(i)
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Class ids (blank-free) -> glosses."""
        return [self.glosses[i - 1] for i in ids if i != BLANK_ID]
