"""Where a model's errors on the built-in synthetic corpus come from.

Glosses of the generator's inventory are laid out on a trajectory x hand-shape grid
(`cslr.datasets.synthetic.lexicon.build_inventory`): glosses that share a trajectory differ only in hand shape.
Each substitution of sclite's alignment is classified by what separates the reference gloss from the
hypothesis: "shape" (same trajectory, another hand shape: the hands were seen moving but their shape was not
read), "trajectory" (same shape), "both", or "special" (a `__X__` token, a gloss outside the inventory, or the
`[EMPTY]` of an emptied hypothesis).

    python launch/score.py --hyp runs/student-rgb/test_hyp.ctm --synthetic small --split test
"""

from __future__ import annotations

from collections import Counter

from cslr.datasets.synthetic import PRESETS, plan_corpus

from .wer import WERResult, reference_from_annotation, score, sentence_scores

KINDS = ("shape", "trajectory", "both", "special")


def _corpus(preset: str, seed: int):
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; available: {sorted(PRESETS)}")
    return plan_corpus(PRESETS[preset], seed)


def synthetic_references(preset: str, split: str, seed: int = 0, protocol: str = "phoenix2014",
                         corpus=None) -> dict[str, tuple[str, list[str]]]:
    """Video id -> (signer, reference glosses) of the built-in corpus (`preset`, `seed`) on `split`, from its
    plan, normalised as the data's `gloss.txt` is scored: what `score` takes."""
    corpus = corpus or _corpus(preset, seed)
    if split not in corpus.samples:
        raise ValueError(f"synthetic preset {preset!r} has no split {split!r}")
    return {s.key: (corpus.signers[s.signer].name, reference_from_annotation(" ".join(s.tokens), protocol))
            for s in corpus.samples[split]}


def substitution_kind(a, b) -> str:
    """What separates two inventory signs (`Sign`, None outside it): "shape", "trajectory", "both", "special"."""
    if a is None or b is None or a.name.startswith("__") or b.name.startswith("__"):
        return "special"
    same_trajectory, same_shape = a.trajectory == b.trajectory, a.shape == b.shape
    if same_trajectory and not same_shape:
        return "shape"
    if same_shape and not same_trajectory:
        return "trajectory"
    return "both" if not (same_shape or same_trajectory) else "special"  # the same sign under two names


def synthetic_score(hyps: dict[str, list[str]], preset: str, split: str, seed: int = 0,
                    protocol: str = "phoenix2014") -> tuple[WERResult, dict[str, int]]:
    """`score` of `hyps` (video id -> raw model glosses) against the synthetic `split`, and its substitutions
    counted by what separates the two glosses (KINDS; module docstring), from `sentence_scores`' pairs."""
    corpus = _corpus(preset, seed)
    refs = synthetic_references(preset, split, seed, protocol, corpus)
    # normalised name -> sign: a gloss's own name first, then prefixed forms (loc-X scores as X: a sign X wins)
    signs = {name.lower(): sign for name, sign in corpus.signs.items()}
    for name, sign in corpus.signs.items():
        for key in reference_from_annotation(name, protocol):
            signs.setdefault(key.lower(), sign)
    kinds = Counter(substitution_kind(signs.get(r.lower()), signs.get(h.lower()))
                    for sentence in sentence_scores(hyps, refs, protocol) for r, h in sentence.substitutions)
    return score(hyps, refs, protocol), {k: kinds[k] for k in KINDS}
