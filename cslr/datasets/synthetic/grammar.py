"""Sentences: a gloss-bigram grammar over a Zipf unigram, sparse special tokens, sometimes __ON__ / __OFF__."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .presets import OFF, ON, SyntheticPreset


@dataclass
class Grammar:
    """A gloss-bigram grammar: p(next | prev) = w * successors(prev) + (1 - w) * Zipf unigram."""

    names: list[str]
    unigram_cdf: np.ndarray  # (V,)
    successors: np.ndarray  # (V, K) gloss indices
    successor_cdf: np.ndarray  # (V, K)
    bigram_weight: float

    @classmethod
    def build(cls, names: list[str], preset: SyntheticPreset, rng: np.random.Generator) -> "Grammar":
        v = len(names)
        p = 1.0 / (np.arange(v) + preset.zipf_offset) ** preset.zipf
        p /= p.sum()
        k = min(preset.successors, v)
        succ = np.stack([rng.choice(v, size=k, replace=False, p=p) for _ in range(v)])
        w = rng.dirichlet(np.ones(k), size=v)
        return cls(names, np.cumsum(p), succ, np.cumsum(w, axis=1), preset.bigram_weight)

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        u = rng.random((n, 2))
        out = [int(np.searchsorted(self.unigram_cdf, u[0, 1] * self.unigram_cdf[-1]))]
        for i in range(1, n):
            prev = out[-1]
            if u[i, 0] < self.bigram_weight:
                j = int(np.searchsorted(self.successor_cdf[prev], u[i, 1] * self.successor_cdf[prev, -1]))
                out.append(int(self.successors[prev, min(j, self.successors.shape[1] - 1)]))
            else:
                out.append(int(np.searchsorted(self.unigram_cdf, u[i, 1] * self.unigram_cdf[-1])))
        return [self.names[min(i, len(self.names) - 1)] for i in out]


def sample_sentence(grammar: Grammar, preset: SyntheticPreset, rng: np.random.Generator) -> list[str]:
    """Glosses of one sentence: a length, grammar glosses with sparse specials, sometimes __ON__ / __OFF__."""
    while True:
        n = int(round(rng.normal(preset.glosses_mean, preset.glosses_std)))
        if preset.glosses_min <= n <= preset.glosses_max:
            break
    tokens = grammar.sample(n, rng)
    specials, probs = list(preset.p_special), np.array(list(preset.p_special.values()))
    u = rng.random(n)
    cum = np.cumsum(probs)
    for i in range(n):
        k = int(np.searchsorted(cum, u[i], side="right"))
        if k < len(specials):
            tokens[i] = specials[k]
    if all(t in preset.p_special for t in tokens):  # keep at least one real gloss
        tokens[0] = grammar.sample(1, rng)[0]
    if rng.random() < preset.p_on:
        tokens.insert(0, ON)
    if rng.random() < preset.p_off:
        tokens.append(OFF)
    return tokens
