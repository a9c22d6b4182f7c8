"""The built-in procedural synthetic corpus: PHOENIX-2014-like sign videos + MediaPipe Holistic poses.

    python launch/prepare.py synthetic --preset small --out data/synth --workers 2

How a video is made is explained in `corpus.py`. The modules, each importing only the ones above it (and
`cslr.io`, `cslr.datasets.render` / `schema` / `vocab` / `writer`):

    presets.py   SyntheticPreset, PRESETS, the splits, the frame rate, the PHOENIX special tokens
    curves.py    time-series helpers: easing, transitions, Gaussian smoothing, resampling, slow noise
    lexicon.py   gloss names, hand shapes, trajectories (motion primitives), the gloss inventory
    grammar.py   the gloss-bigram sentence grammar
    signers.py   per-signer body, speed, noise and look
    body.py      control channels -> skeleton (IK, hand FK, face) -> landmarks -> pose-estimator observation
    plan.py      the corpus plan: every sample's sentence, signer and seed
    motion.py    a sign instance's controls, a video's timeline, co-articulation
    corpus.py    one sample (pose + frames), shards, manifest, prepare_synthetic, cached_corpus, statistics
    cli.py       `launch/prepare.py synthetic`
"""

from .cli import add_cli
from .corpus import GENERATOR_VERSION, cached_corpus, corpus_statistics, make_sample, prepare_synthetic, preview
from .motion import build_controls, plan_timing
from .plan import Corpus, SampleSpec, plan_corpus
from .presets import EMOTION, FPS, LEFTHAND, OFF, ON, PRESETS, PU, SPLITS, SyntheticPreset

__all__ = [
    "EMOTION", "FPS", "GENERATOR_VERSION", "LEFTHAND", "OFF", "ON", "PRESETS", "PU", "SPLITS", "Corpus",
    "SampleSpec", "SyntheticPreset", "add_cli", "build_controls", "cached_corpus", "corpus_statistics",
    "make_sample", "plan_corpus", "plan_timing", "prepare_synthetic", "preview",
]
