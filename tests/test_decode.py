"""Tests of cslr.eval.decode against references: a plain-Python best path, and brute-force
enumeration of every alignment for prefix beam search.

    pytest tests/test_decode.py -q
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cslr.eval.decode import beam_search, greedy_decode


def _collapse(path, blank):
    return [c for c, _ in itertools.groupby(path) if c != blank]


def _greedy_reference(log_probs: torch.Tensor, lengths, blank):
    return [_collapse(log_probs[b, : int(n)].argmax(-1).tolist(), blank) for b, n in enumerate(lengths)]


def _labelling_log_probs(lp: np.ndarray, blank: int) -> dict[tuple, float]:
    """log P(labelling) for every labelling, summing all V**T alignments (lp: (T, V), float64)."""
    T, V = lp.shape
    paths = np.array(list(itertools.product(range(V), repeat=T)), dtype=np.int64).reshape(-1, T)  # (V**T, T)
    path_lp = lp[np.arange(T), paths].sum(1)  # (V**T,)
    by_label: dict[tuple, list[float]] = {}
    for path, s in zip(paths.tolist(), path_lp.tolist()):
        by_label.setdefault(tuple(_collapse(path, blank)), []).append(s)
    return {lab: float(np.logaddexp.reduce(v)) for lab, v in by_label.items()}


def _random_log_probs(seed: int, B: int, T: int, V: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).log_softmax(-1)  # (B, T, V)


# ------------------------------------------------------------------------------------------ greedy


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 4), T=st.integers(1, 12), V=st.integers(2, 6),
       blank=st.integers(0, 1))
def test_greedy_matches_reference(seed, B, T, V, blank):
    lp = _random_log_probs(seed, B, T, V, scale=1.0)
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    assert greedy_decode(lp, lengths, blank=blank) == _greedy_reference(lp, lengths, blank)


def test_greedy_collapses_repeats_only_without_blank_between():
    # frames: a a blank a b b -> [a, a, b]
    lp = torch.log(torch.eye(3)[[1, 1, 0, 1, 2, 2]] * 0.98 + 0.01)[None]  # (1, 6, 3)
    assert greedy_decode(lp, torch.tensor([6])) == [[1, 1, 2]]
    assert greedy_decode(lp, torch.tensor([2])) == [[1]]
    assert greedy_decode(lp, torch.tensor([0])) == [[]]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        greedy_decode(torch.zeros(3, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="lengths must lie"):
        beam_search(torch.zeros(1, 4, 3), torch.tensor([5]))


# ------------------------------------------------------------------------------------- beam search


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), T=st.integers(1, 6), V=st.integers(2, 4), blank=st.integers(0, 1),
       scale=st.sampled_from([0.5, 2.0, 5.0]))
def test_wide_beam_finds_the_most_probable_labelling(seed, T, V, blank, scale):
    lp = _random_log_probs(seed, 1, T, V, scale)
    exact = _labelling_log_probs(lp[0].numpy(), blank)
    width = sum((V - 1) ** n for n in range(T + 1))  # every possible prefix fits: nothing is pruned
    (hyp,), (logp,) = beam_search(lp, torch.tensor([T]), beam_width=width, blank=blank, return_scores=True)
    best = max(exact.values())
    assert exact[tuple(hyp)] == pytest.approx(best, abs=1e-9)  # ties may pick either labelling
    assert logp == pytest.approx(best, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), T=st.integers(1, 6), V=st.integers(2, 4), width=st.integers(1, 4))
def test_narrow_beam_score_is_the_true_probability_of_its_labelling(seed, T, V, width):
    # Merging keeps every prefix's probability exact over the alignments the beam explored; with a narrow
    # beam some are lost, so the score is a lower bound on the labelling's true probability.
    lp = _random_log_probs(seed, 1, T, V)
    exact = _labelling_log_probs(lp[0].numpy(), 0)
    (hyp,), (logp,) = beam_search(lp, torch.tensor([T]), beam_width=width, return_scores=True)
    assert logp <= exact[tuple(hyp)] + 1e-9


def test_repeated_labels_need_a_blank():
    # Two frames of label 1 then blank then 1: [1, 1] is far more likely than [1] as a labelling here.
    p = torch.tensor([[0.05, 0.95], [0.05, 0.95], [0.95, 0.05], [0.05, 0.95]], dtype=torch.float64)
    hyps, (logp,) = beam_search(p.log()[None], torch.tensor([4]), beam_width=8, return_scores=True)
    exact = _labelling_log_probs(p.log().numpy(), 0)
    assert hyps == [[1, 1]] and logp == pytest.approx(exact[(1, 1)], abs=1e-12)


def test_beam_search_prefers_the_labelling_over_the_best_path():
    # Best path is blank-blank -> []; but [1] collects 1 - 0.6**2 = 0.64 > 0.36 over its 3 alignments.
    p = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)[None]
    assert greedy_decode(p.log(), torch.tensor([2])) == [[]]
    hyps, (logp,) = beam_search(p.log(), torch.tensor([2]), beam_width=2, return_scores=True)
    assert hyps == [[1]] and logp == pytest.approx(math.log(0.64))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 5), T=st.integers(1, 10), V=st.integers(2, 7))
def test_width_one_equals_greedy_on_peaked_frames(seed, B, T, V):
    # Width 1 is not greedy in general (test above); with near one-hot frames both follow the best path.
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, V, (B, T), generator=g)
    lp = torch.nn.functional.one_hot(best, V).double().mul(30.0).log_softmax(-1)  # (B, T, V)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    assert beam_search(lp, lengths, beam_width=1) == greedy_decode(lp, lengths)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(2, 5), T=st.integers(1, 8), V=st.integers(2, 6),
       width=st.integers(1, 6))
def test_padding_is_ignored_and_samples_are_independent(seed, B, T, V, width):
    lp = _random_log_probs(seed, B, T, V)
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    garbage = lp.clone()
    pad = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T)
    garbage[pad] = _random_log_probs(seed + 1, B, T, V)[pad]
    batched, scores = beam_search(garbage, lengths, beam_width=width, return_scores=True)
    for b in range(B):
        n = int(lengths[b])
        alone, alone_scores = beam_search(lp[b : b + 1, :n], torch.tensor([n]), beam_width=width, return_scores=True)
        assert batched[b] == alone[0]
        assert scores[b] == pytest.approx(alone_scores[0], abs=1e-9)
    assert greedy_decode(garbage, lengths) == _greedy_reference(lp, lengths, 0)


def test_prune_topk_with_all_labels_changes_nothing():
    lp = _random_log_probs(7, 4, 9, 6)
    lengths = torch.tensor([9, 5, 1, 0])
    assert beam_search(lp, lengths, beam_width=4, prune_topk=6) == beam_search(lp, lengths, beam_width=4)


def test_prune_topk_on_peaked_frames_matches_unpruned():
    lp = _random_log_probs(3, 6, 12, 40, scale=6.0)  # peaked: the top few labels hold the mass
    lengths = torch.full((6,), 12)
    assert beam_search(lp, lengths, beam_width=5, prune_topk=3) == beam_search(lp, lengths, beam_width=5)


def test_half_precision_input_and_no_blank_zero():
    lp = _random_log_probs(5, 3, 7, 5).half()  # decoded in float32 inside
    lengths = torch.tensor([7, 4, 2])
    hyps = beam_search(lp, lengths, beam_width=3, blank=4)
    assert hyps == beam_search(lp.double(), lengths, beam_width=3, blank=4)
    assert all(4 not in h for h in hyps) and any(hyps)


# ---------------------------------------------------------------------------------- shallow LM fusion

from cslr.datasets.vocab import Vocabulary  # noqa: E402
from cslr.eval.lm import estimate_kneser_ney  # noqa: E402
from cslr.eval.wer import reference_from_annotation  # noqa: E402

# Model classes: 0 blank, 1 A, 2 B, 3 C, 4 __PU__ (deleted by the phoenix2014 scorer: transparent to the LM).
_FUSION_VOCAB = Vocabulary(["A", "B", "C", "__PU__"])


def _fusion_lm(seed: int, order: int):
    rng = np.random.default_rng(seed)
    sents = [[str(w) for w in rng.choice(["A", "B", "C", "D"], size=rng.integers(1, 5), p=[0.5, 0.3, 0.15, 0.05])]
             for _ in range(40)]
    return estimate_kneser_ney(sents, order=order)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 4), T=st.integers(1, 10), width=st.integers(1, 6),
       prune=st.sampled_from([None, 2, 3]))
def test_fusion_with_zero_weights_is_plain_beam_search(seed, B, T, width, prune):
    lp = _random_log_probs(seed, B, T, 5).float()
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    lm = _fusion_lm(seed, 3).bind(_FUSION_VOCAB)
    plain = beam_search(lp, lengths, beam_width=width, prune_topk=prune, return_scores=True)
    fused = beam_search(lp, lengths, beam_width=width, prune_topk=prune, return_scores=True, lm=lm, lm_weight=0.0,
                        word_bonus=0.0)
    assert fused == plain  # the labellings and the scores, bit for bit


def _fused_brute_force(lp: np.ndarray, lm, alpha: float, beta: float) -> dict[tuple, float]:
    """Every labelling's fused score: log P_ctc (all alignments) + alpha * ln p_lm(normalised glosses + </s>) + beta * len."""
    out = {}
    for lab, ctc in _labelling_log_probs(lp, 0).items():
        glosses = reference_from_annotation(" ".join(_FUSION_VOCAB.decode(lab)), "phoenix2014")
        lm_lp = lm.sentence_log_prob(glosses) if lm is not None else 0.0
        out[lab] = ctc + alpha * lm_lp + beta * len(lab)
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), T=st.integers(1, 5), order=st.integers(2, 4),
       alpha=st.sampled_from([0.3, 1.0, 2.5]), beta=st.sampled_from([-1.0, 0.0, 0.7, 2.0]),
       scale=st.sampled_from([0.5, 2.0]))
def test_wide_fused_beam_equals_brute_force(seed, T, order, alpha, beta, scale):
    lp = _random_log_probs(seed, 1, T, 5, scale)  # (1, T, 5) float64
    ngram = _fusion_lm(seed, order)
    exact = _fused_brute_force(lp[0].numpy(), ngram, alpha, beta)
    width = sum(4 ** n for n in range(T + 1))  # every prefix fits
    (hyp,), (fused,) = beam_search(lp, torch.tensor([T]), beam_width=width, return_scores=True,
                                   lm=ngram.bind(_FUSION_VOCAB), lm_weight=alpha, word_bonus=beta)
    best = max(exact.values())
    assert fused == pytest.approx(best, abs=1e-9)
    assert exact[tuple(hyp)] == pytest.approx(best, abs=1e-9)  # ties may pick either labelling


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), T=st.integers(1, 5), beta=st.sampled_from([-2.0, 1.0, 3.0]))
def test_word_bonus_alone_equals_brute_force(seed, T, beta):
    lp = _random_log_probs(seed, 1, T, 4)
    exact = {lab: s + beta * len(lab) for lab, s in _labelling_log_probs(lp[0].numpy(), 0).items()}
    (hyp,), (fused,) = beam_search(lp, torch.tensor([T]), beam_width=sum(3 ** n for n in range(T + 1)),
                                   return_scores=True, word_bonus=beta)
    assert fused == pytest.approx(max(exact.values()), abs=1e-9) == exact[tuple(hyp)]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(2, 5), T=st.integers(1, 8), width=st.integers(1, 5))
def test_fused_batch_samples_are_independent(seed, B, T, width):
    lp = _random_log_probs(seed, B, T, 5)
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    lm = _fusion_lm(seed, 3).bind(_FUSION_VOCAB)
    batched, scores = beam_search(lp, lengths, beam_width=width, return_scores=True, lm=lm, lm_weight=1.0, word_bonus=0.5)
    for b in range(B):
        n = int(lengths[b])
        alone, s = beam_search(lp[b: b + 1, :n], torch.tensor([n]), beam_width=width, return_scores=True, lm=lm,
                               lm_weight=1.0, word_bonus=0.5)
        assert batched[b] == alone[0] and scores[b] == pytest.approx(s[0], abs=1e-9)


def test_a_strong_lm_overrules_ambiguous_frames():
    # Frames that cannot tell A from B; the LM has only ever seen "A C".
    lm = estimate_kneser_ney([["A", "C"]] * 20, order=2).bind(_FUSION_VOCAB)
    p = torch.tensor([[0.02, 0.48, 0.48, 0.01, 0.01], [0.9, 0.03, 0.03, 0.02, 0.02], [0.02, 0.01, 0.01, 0.95, 0.01]],
                     dtype=torch.float64)
    lp = p.log()[None]
    assert beam_search(lp, torch.tensor([3]), beam_width=4, lm=lm, lm_weight=1.0) == [[1, 3]]
    lp_b = lp.clone()
    lp_b[0, 0, 2] += 1e-3  # B now slightly ahead on the frames
    assert beam_search(lp_b, torch.tensor([3]), beam_width=4) == [[2, 3]]
    assert beam_search(lp_b, torch.tensor([3]), beam_width=4, lm=lm, lm_weight=1.0) == [[1, 3]]
