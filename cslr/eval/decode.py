"""CTC decoding: greedy (best path) and prefix beam search, batched in torch.

    from cslr.eval.decode import greedy_decode, beam_search
    hyps = beam_search(log_probs, lengths, beam_width=10)   # log_probs (B, T, V), lengths (B,)

Both take log-probabilities (or any scores for greedy), batch first, and ignore frames at and after
each sample's length. Both return lists of class ids with the blank removed. `ctc_align` gives the frames of each
label of a decoded hypothesis (its Viterbi path: CTM times in the recognizer).

Prefix beam search keeps, for every prefix, the log-probability of all alignments that end in a blank
(``p_b``) and in a label (``p_nb``); a prefix's score is their log-sum. Equal prefixes reached by two
paths are merged, and a repeated label extends the prefix only from ``p_b`` (CTC needs a blank in
between). With a beam wide enough to hold every prefix this is exact: it returns the labelling of
highest total probability. Width 1 is NOT greedy decoding: it follows the single most probable prefix,
summing over its alignments, where greedy follows the single most probable frame path; the two agree
when the frame distributions are (near) one-hot, and may differ otherwise.

Shallow fusion (``lm=``, ``lm_weight``, ``word_bonus``): prefixes are ranked by
``log p_ctc + lm_weight * log p_lm + word_bonus * length``, the LM's state carried per prefix and ``</s>`` scored
when the best prefix is chosen after the last frame. ``p_b``/``p_nb`` stay pure CTC: the LM term is a function of
the prefix alone, so merging equal prefixes stays exact, and a beam wide enough for every prefix returns the
labelling of highest fused score (tests/test_decode.py checks it against brute force). ``lm`` is anything with
the :class:`FusionLM` methods, e.g. ``cslr.eval.lm.load_lm(path).bind(vocab, protocol)``. With ``lm=None`` and
``word_bonus=0`` the search is exactly the plain one; with ``lm_weight=0`` and ``word_bonus=0`` it ranks by the
same numbers and returns the same labellings.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

NEG_INF = float("-inf")


class FusionLM(Protocol):
    """What the beam search needs of a language model over the CTC model's class ids (``cslr.eval.lm.VocabLM``)."""

    def begin(self) -> int: ...  # the state id after <s>

    def advance(self, states: list[int], labels: list[int]) -> list[int]: ...  # state ids after each (state, class)

    def log_probs(self, states: Tensor) -> Tensor: ...  # (...,) state ids -> (..., V) ln p(class | state)

    def end_log_probs(self, states: Tensor) -> Tensor: ...  # (...,) -> (...,) ln p(</s> | state)


def _check(log_probs: Tensor, lengths: Tensor) -> None:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
    if lengths.shape != (log_probs.shape[0],):
        raise ValueError(f"lengths must be (B,) = ({log_probs.shape[0]},), got {tuple(lengths.shape)}")
    if len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > log_probs.shape[1]):
        raise ValueError(f"lengths must lie in [0, T={log_probs.shape[1]}], got {lengths.tolist()}")


def greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, collapse repeats, drop blanks."""
    _check(log_probs, lengths)
    best = log_probs.argmax(-1)  # (B, T)
    B, T = best.shape
    valid = torch.arange(T, device=best.device) < lengths.to(best.device)[:, None]  # (B, T)
    prev = torch.cat([best.new_full((B, 1), -1), best[:, :-1]], dim=1)  # (B, T); -1: nothing before t=0
    keep = valid & (best != prev) & (best != blank)  # (B, T)
    ids = best[keep].tolist()  # row-major: sample by sample, in time order
    out, start = [], 0
    for n in keep.sum(1).tolist():
        out.append(ids[start : start + n])
        start += n
    return out


def beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_width: int = 10,
    blank: int = 0,
    prune_topk: int | None = None,
    return_scores: bool = False,
    lm: FusionLM | None = None,
    lm_weight: float = 0.0,
    word_bonus: float = 0.0,
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """CTC prefix beam search over the whole batch at once (a loop over time, beam state in tensors).

    Args:
        log_probs: (B, T, V) log-probabilities (log_softmax output); computed in float32 at least.
        lengths: (B,) valid frames per sample; later frames are ignored.
        beam_width: prefixes kept per sample.
        blank: the blank class id.
        prune_topk: if set, only the `prune_topk` most probable labels of a frame may start a new prefix
            (probability still flows into prefixes already in the beam).
        return_scores: also return each best labelling's log-probability (exact when nothing was pruned); with
            fusion, its fused score (``</s>`` included).
        lm: a language model over the class ids for shallow fusion (see :class:`FusionLM`), or None.
        lm_weight: the weight of ln p_lm.
        word_bonus: added per label of a prefix (also without an LM: an insertion bonus).

    Returns:
        Per sample, the best labelling (class ids); with `return_scores`, also a list of floats.
    """
    _check(log_probs, lengths)
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    lp = log_probs.detach()
    if lp.dtype not in (torch.float32, torch.float64):
        lp = lp.float()
    B, T, V = lp.shape
    K, dev = beam_width, lp.device
    lengths = lengths.to(dev)
    P = V if prune_topk is None else max(1, min(prune_topk, V))  # labels that may start a new prefix

    # Beam state. Beam 0 starts as the empty prefix; the others are dead (-inf) until filled.
    p_b = torch.full((B, K), NEG_INF, dtype=lp.dtype, device=dev)  # (B, K)
    p_b[:, 0] = 0.0
    p_nb = torch.full_like(p_b, NEG_INF)  # (B, K)
    prefix = torch.full((B, K, max(T, 1)), blank, dtype=torch.long, device=dev)  # (B, K, L)
    plen = torch.zeros((B, K), dtype=torch.long, device=dev)  # (B, K)
    last = torch.full((B, K), blank, dtype=torch.long, device=dev)  # (B, K); blank for the empty prefix
    pos = torch.arange(prefix.shape[2], device=dev)  # (L,)
    rows = torch.arange(B, device=dev)[:, None]  # (B, 1)
    parent_offset = torch.arange(K, device=dev)[None, None, :] * (P + 1)  # (1, 1, K)
    all_labels = torch.arange(V, device=dev).expand(B, V)  # (B, V)
    fuse = lm is not None or word_bonus != 0.0
    if fuse:
        lm_score = torch.zeros((B, K), dtype=lp.dtype, device=dev)  # (B, K): lm_weight * ln p_lm + word_bonus * len
        lm_state = torch.full((B, K), lm.begin() if lm is not None else 0, dtype=torch.long)  # (B, K), on the CPU

    for t in range(T):
        frame = lp[:, t]  # (B, V)
        total = torch.logaddexp(p_b, p_nb)  # (B, K)
        alive = total > NEG_INF  # (B, K)
        if P == V:
            labels, label_lp, slot_of = all_labels, frame, all_labels  # slot_of: label -> candidate column
        else:
            labels = frame.topk(P, dim=1).indices  # (B, P)
            label_lp = frame.gather(1, labels)  # (B, P)
            slot_of = torch.full((B, V), P, dtype=torch.long, device=dev).scatter_(
                1, labels, torch.arange(P, device=dev).expand(B, P))  # (B, V); P: not a candidate

        # Candidates (B, K, P + 1): column p < P is "beam k + labels[p]", column P is "beam k unchanged".
        # Column P doubles as the sink for writes about labels outside the candidates: it is written last.
        cand = torch.empty((B, K, P + 1), dtype=lp.dtype, device=dev)
        cand[..., :P] = total[..., None] + label_lp[:, None, :]  # (B, K, P)
        # A label repeating the prefix's last one extends it only from alignments ending in blank.
        cand.scatter_(2, slot_of.gather(1, last)[..., None], (p_b + frame.gather(1, last))[..., None])
        cand[..., :P].masked_fill_((labels == blank)[:, None, :], NEG_INF)  # blank never extends

        # Merge: if beam j is beam k plus one label c (= last[j]), the extension (k, c) is j's own prefix;
        # its probability joins j's p_nb and the duplicate candidate is removed. Only alive j: dead beams
        # hold stale prefixes.
        same_head = ((prefix[:, :, None, :] == prefix[:, None, :, :]) | (pos >= plen[:, None, :, None])).all(-1)
        merge = same_head & (plen[:, :, None] == plen[:, None, :] + 1) & alive[:, :, None]  # (B, J, K)
        repeat = last[:, :, None] == last[:, None, :]  # (B, J, K): c = last[j] repeats last[k]
        into_j = torch.where(repeat, p_b[:, None, :], total[:, None, :]) + frame.gather(1, last)[:, :, None]
        stay_b = total + frame[:, blank, None]  # (B, K): a blank
        stay_nb = p_nb + frame.gather(1, last)  # (B, K): the last label again; -inf for the empty prefix
        stay_nb = torch.logaddexp(stay_nb, torch.where(merge, into_j, NEG_INF).logsumexp(-1))
        col = parent_offset + slot_of.gather(1, last)[:, :, None]  # (B, J, K): column of (k, last[j])
        cand.view(B, -1)[rows.expand(B, K * K)[merge.view(B, -1)], col.reshape(B, -1)[merge.view(B, -1)]] = NEG_INF
        cand[..., P] = torch.logaddexp(stay_b, stay_nb)

        if fuse:
            # The same candidates ranked by CTC + LM: a label column adds the label's LM term, the stay column none.
            ext = torch.full((B, K, V), word_bonus, dtype=lp.dtype, device=dev)  # (B, K, V)
            if lm is not None:
                ext += lm_weight * lm.log_probs(lm_state).to(device=dev, dtype=lp.dtype)
            bonus = torch.empty_like(cand)  # (B, K, P + 1)
            bonus[..., :P] = lm_score[..., None] + (ext if P == V else ext.gather(2, labels[:, None, :].expand(B, K, P)))
            bonus[..., P] = lm_score
            ranked, idx = (cand + bonus).view(B, -1).topk(K, dim=1)  # (B, K), best first
            score = cand.view(B, -1).gather(1, idx)  # (B, K): their CTC part
        else:
            score, idx = cand.view(B, -1).topk(K, dim=1)  # (B, K), best first
        parent, slot = idx // (P + 1), idx % (P + 1)  # (B, K)
        is_stay = slot == P
        c = labels.gather(1, slot.clamp(max=P - 1))  # (B, K); meaningless where is_stay
        new_b = torch.where(is_stay, stay_b.gather(1, parent), NEG_INF)
        new_nb = torch.where(is_stay, stay_nb.gather(1, parent), score)
        par_len = plen.gather(1, parent)
        new_prefix = prefix.gather(1, parent[..., None].expand_as(prefix))
        grow = (~is_stay)[..., None] & (pos == par_len[..., None])  # (B, K, L)
        new_prefix = torch.where(grow, c[..., None], new_prefix)
        new_len = par_len + (~is_stay).long()
        new_last = torch.where(is_stay, last.gather(1, parent), c)

        # Samples already past their length keep their state.
        active = (t < lengths)[:, None]  # (B, 1)
        p_b = torch.where(active, new_b, p_b)
        p_nb = torch.where(active, new_nb, p_nb)
        plen = torch.where(active, new_len, plen)
        last = torch.where(active, new_last, last)
        prefix = torch.where(active[..., None], new_prefix, prefix)
        if fuse:
            lm_score = torch.where(active, bonus.view(B, -1).gather(1, idx), lm_score)
            if lm is not None:
                new_state = lm_state.gather(1, parent.cpu())  # (B, K)
                grown = ((~is_stay) & (ranked > NEG_INF) & active).cpu()  # extensions of live beams only
                if grown.any():
                    new_state[grown] = torch.tensor(lm.advance(new_state[grown].tolist(), c.cpu()[grown].tolist()),
                                                    dtype=torch.long)
                lm_state = torch.where(active.cpu(), new_state, lm_state)

    total = torch.logaddexp(p_b, p_nb)  # (B, K)
    if fuse:
        total = total + lm_score
        if lm is not None:
            total = total + lm_weight * lm.end_log_probs(lm_state).to(device=dev, dtype=lp.dtype)
    best = total.argmax(1)  # (B,)
    best_prefix = prefix[torch.arange(B, device=dev), best].tolist()
    best_len = plen[torch.arange(B, device=dev), best].tolist()
    hyps = [p[:n] for p, n in zip(best_prefix, best_len)]
    if return_scores:
        return hyps, total.max(1).values.tolist()
    return hyps


def ctc_align(log_probs: np.ndarray, labels: list[int], blank: int = 0) -> list[tuple[int, int]]:
    """The best CTC path of `labels` through log-probs (T', V) (Viterbi) -> (first, last) output frame per label."""
    if not labels:
        return []
    ext = [blank]
    for lab in labels:
        ext += [lab, blank]
    S, T = len(ext), log_probs.shape[0]
    ext_a = np.array(ext)
    emit = log_probs[:, ext_a]  # (T', S)
    skip = np.zeros(S, dtype=bool)  # s may come from s - 2: a label that differs from the one before it
    skip[3::2] = ext_a[3::2] != ext_a[1:-2:2]
    score = np.full(S, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stay, 1: from s - 1, 2: from s - 2
    for t in range(1, T):
        prev2 = np.where(skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)
        cand = np.stack([score, np.r_[-np.inf, score[:-1]], prev2])
        back[t] = cand.argmax(0)
        score = cand.max(0) + emit[t]
    s = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    path = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= back[t, s]
    spans = []
    for k in range(len(labels)):
        frames = np.flatnonzero(path == 2 * k + 1)
        spans.append((int(frames[0]), int(frames[-1])))
    return spans
