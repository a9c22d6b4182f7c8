"""The built-in procedural synthetic corpus (see `corpus.py`); a package so that it can be split by idea."""

from .corpus import (  # noqa: F401
    EMOTION, FPS, GENERATOR_VERSION, LEFTHAND, OFF, ON, PRESETS, PU, SPLITS, Corpus, SampleSpec, SyntheticPreset,
    add_cli, build_controls, cached_corpus, corpus_statistics, make_sample, plan_corpus, plan_timing,
    prepare_synthetic, preview,
)
