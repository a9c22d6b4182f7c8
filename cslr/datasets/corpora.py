"""Every corpus a converter or the landmark extractor can read, by the name the command lines use.

    corpus = open_corpus("phoenix2014", root="PATH/phoenix2014-release")
    corpus = open_corpus("videos", annotations="ann.csv", videos="clips/")
    rows, malformed = corpus.read_split("dev"); source = corpus.frames(rows[0], "dev")
"""

from __future__ import annotations

import os

from .convert import ConversionError, Corpus
from .csl_daily import CslDailyCorpus
from .phoenix import CORPORA as PHOENIX_CORPORA
from .phoenix import PhoenixCorpus
from .video_corpus import VideoCorpus

KINDS = (*PHOENIX_CORPORA, "csl-daily", "videos")


def open_corpus(kind: str, root: str | os.PathLike | None = None, annotations: str | os.PathLike | None = None,
                videos: str | os.PathLike | None = None) -> Corpus:
    """The corpus `kind` (see KINDS): PHOENIX and CSL-Daily need `root`, "videos" `annotations` and `videos`.

    Raises ConversionError for an unknown kind, a missing argument or a folder in the wrong layout.
    """
    if kind == "videos":
        if annotations is None or videos is None:
            raise ConversionError("--corpus videos needs --annotations ANN.csv and --videos DIR")
        return VideoCorpus.open(annotations, videos)
    if root is None:
        raise ConversionError(f"--corpus {kind} needs --root")
    if kind == "csl-daily":
        return CslDailyCorpus.open(root)
    if kind in PHOENIX_CORPORA:
        return PhoenixCorpus.open(kind, root)
    raise ConversionError(f"unknown corpus {kind!r}; choose from {', '.join(KINDS)}")
