"""The corpus plan: every sample's sentence, signer and seed, drawn in the main process (cheap: no rendering)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grammar import Grammar, sample_sentence
from .lexicon import build_inventory
from .presets import SPLITS, SyntheticPreset
from .signers import make_signers


@dataclass(frozen=True)
class SampleSpec:
    key: str
    split: str
    tokens: tuple
    signer: int  # index into the corpus's signers
    seed: tuple  # SeedSequence entropy of this sample


@dataclass
class Corpus:
    preset: SyntheticPreset
    seed: int
    signs: dict  # name -> Sign
    signers: list
    samples: dict  # split -> list[SampleSpec]
    held_out_signer: int | None = None


def plan_corpus(preset: SyntheticPreset, seed: int = 0, held_out_signer: int | None = None,
                num_videos: dict | None = None) -> Corpus:
    """Draw the inventory, grammar, signers and every sample's sentence and signer (cheap: no rendering).

    Args:
        held_out_signer: 1-based signer number that appears only in dev and test (None: all signers everywhere).
        num_videos: override the preset's videos per split (e.g. to sample statistics on a subset).
    """
    if held_out_signer is not None and not 1 <= held_out_signer <= preset.num_signers:
        raise ValueError(f"--held-out-signer {held_out_signer}: preset {preset.name} has signers 1..{preset.num_signers}")
    signs = build_inventory(preset, np.random.default_rng([seed, 1]))
    grammar = Grammar.build([s.name for s in signs[: preset.vocab_size]], preset, np.random.default_rng([seed, 2]))
    signers = make_signers(preset, np.random.default_rng([seed, 3]))
    share = np.random.default_rng([seed, 4]).dirichlet(np.full(preset.num_signers, preset.signer_alpha))
    train_ids = [k for k in range(preset.num_signers) if k + 1 != held_out_signer]
    train_p = share[train_ids] / share[train_ids].sum()
    samples = {}
    for si, split in enumerate(SPLITS):
        n = (num_videos or preset.num_videos)[split]
        rng = np.random.default_rng([seed, 10 + si])
        if split == "train":
            who = rng.choice(train_ids, size=n, p=train_p)
        else:  # balanced over all signers (the held-out one included), in a random order
            who = rng.permutation(np.arange(n) % preset.num_signers)
        samples[split] = [
            SampleSpec(f"{split}_{i:06d}", split, tuple(sample_sentence(grammar, preset, rng)), int(who[i]),
                       (seed, 10 + si, i))
            for i in range(n)
        ]
    return Corpus(preset, seed, {s.name: s for s in signs}, signers, samples, held_out_signer)
