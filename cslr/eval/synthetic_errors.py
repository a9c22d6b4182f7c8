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

from .wer import alignment, normalize_hypothesis, reference_from_annotation

KINDS = ("shape", "trajectory", "both", "special")


def _corpus(preset: str, seed: int):
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; available: {sorted(PRESETS)}")
    return plan_corpus(PRESETS[preset], seed)


def synthetic_references(preset: str, split: str, seed: int = 0, corpus=None) -> dict[str, list[str]]:
    """Video id -> reference glosses of the built-in corpus (`preset`, `seed`) on `split`, from its plan."""
    corpus = corpus or _corpus(preset, seed)
    if split not in corpus.samples:
        raise ValueError(f"synthetic preset {preset!r} has no split {split!r}")
    return {s.key: list(s.tokens) for s in corpus.samples[split]}


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


def sign_part_errors(hyps: dict[str, list[str]], preset: str, split: str, seed: int = 0,
                     protocol: str = "phoenix2014") -> dict:
    """Error counts of `hyps` (video id -> raw model glosses) on the synthetic `split`, with the substitutions
    split by what separates the two glosses (module docstring). Both sides are normalised as the scorer does;
    a video without a hypothesis counts its words as deletions and is listed under "missing"."""
    corpus = _corpus(preset, seed)
    refs = synthetic_references(preset, split, seed, corpus)
    # normalised name -> sign: a gloss's own name first, then prefixed forms (loc-X scores as X: a sign X wins)
    signs = {name.lower(): sign for name, sign in corpus.signs.items()}
    for name, sign in corpus.signs.items():
        for key in reference_from_annotation(name, protocol):
            signs.setdefault(key.lower(), sign)
    counts, missing = Counter(), []
    for vid, ref in refs.items():
        if vid not in hyps:
            missing.append(vid)
        ref = reference_from_annotation(" ".join(ref), protocol)  # as the data's gloss.txt is scored
        hyp = normalize_hypothesis(hyps[vid], protocol) if vid in hyps else []  # missing: all deletions, as `score`
        ops = alignment(ref, hyp)
        for op, r, h in ops:
            counts[op] += 1
            if op == "S":
                counts[substitution_kind(signs.get(r.lower()), signs.get(h.lower()))] += 1
    words = counts["C"] + counts["S"] + counts["D"]
    return {"ref_words": words, "correct": counts["C"], "sub": counts["S"], "del": counts["D"], "ins": counts["I"],
            "wer": 100.0 * (counts["S"] + counts["D"] + counts["I"]) / max(words, 1),
            "sub_by": {k: counts[k] for k in KINDS}, "missing": missing}
