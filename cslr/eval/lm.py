"""Gloss n-gram language models: modified Kneser-Ney estimation, ARPA files, and the scoring interface that
the CTC beam search fuses (:func:`cslr.eval.decode.beam_search`, ``lm=``).

    from cslr.eval.lm import estimate_kneser_ney, write_arpa, load_lm
    lm = estimate_kneser_ney([["__ON__", "REGEN", "__OFF__"], ...], order=3)   # token lists, already normalised
    write_arpa(lm, "lm.arpa")
    lm = load_lm("lm.arpa")                            # NGramLM; lm.weights from lm.arpa.weights.json if present
    logp, state = lm.score(lm.begin(), "REGEN")        # natural log; state: the context that matters
    fusion = lm.bind(vocab, protocol="phoenix2014")    # the model's class ids -> LM tokens, cached per state

The estimator reproduces KenLM's ``lmplz`` (Heafield et al. 2013; Chen & Goodman 1998, eq. 26) without pruning:
each sentence is ``<s> w1 .. wk </s>``; the highest order keeps raw counts, lower orders take adjusted counts
(the number of distinct words seen to their left, ``<s>`` included), except n-grams that begin with ``<s>``,
which keep raw counts; per order three discounts D1, D2, D3+ from the counts of adjusted counts 1-4;
probabilities interpolated down to the uniform distribution over the vocabulary (``<unk>`` and ``</s>`` in,
``<s>`` out), so ``<unk>`` gets the interpolation mass of a word never seen. ``<s>`` is written with log10
probability 0 as lmplz writes it (it is only ever a context). tests/test_lm.py checks the numbers against an
ARPA file that lmplz wrote. KenLM's lmplz itself needs a C++ build; no PyPI wheel ships it (kenlm, kenlm-ex and
ufal-kenlm only wrap querying), and NLTK's ``KneserNeyInterpolated`` has one discount and no ARPA export.

ARPA stores log10; every probability this module hands out is a natural log, on the scale of CTC log-probs.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from cslr.datasets.vocab import Vocabulary
from cslr.io import atomic_write_bytes, atomic_write_json

from .wer import reference_from_annotation

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIALS = (UNK, BOS, EOS)
LN10 = math.log(10.0)
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback defaults, for orders whose statistics fail
WEIGHTS_SUFFIX = ".weights.json"
ZERO_LOG10 = -99.0  # a probability or backoff of 0, as SRILM writes it
NO_UNK_LOG10 = -100.0  # KenLM's log10 probability of an unknown word when the model has no <unk>


class LMFormatError(ValueError):
    """An ARPA file that cannot be read, or a language model that does not fit the model's vocabulary."""


@dataclass
class NGramLM:
    """A back-off n-gram model as an ARPA file holds it.

    ``grams[n]`` maps an n-gram (a tuple of word ids) to ``(log10 p, log10 backoff)``; ``words[i]`` is word id i.
    ``weights`` holds the tuned fusion weights (``lm_weight``, ``word_bonus``) when they were found beside the file.
    """

    order: int
    words: list[str]
    grams: list[dict[tuple, tuple[float, float]]]  # index 0 unused
    meta: dict = field(default_factory=dict)  # "# key: value" header lines (protocol, discounts, ...)
    source: str = ""  # the file it was read from, for messages
    weights: dict | None = None

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}
        self.bos = self.index.get(BOS)
        self.eos = self.index.get(EOS)
        self.unk = self.index.get(UNK)
        # Context -> (word ids, log10 probs) of the n-grams that continue it: the full next-word distribution of a
        # context is then "back-off distribution + its backoff, overwritten where an explicit n-gram exists".
        self._next: list[dict[tuple, tuple[np.ndarray, np.ndarray]]] = [{} for _ in range(self.order + 1)]
        for n in range(2, self.order + 1):
            by_ctx: dict[tuple, list] = defaultdict(list)
            for g, (lp, _) in self.grams[n].items():
                by_ctx[g[:-1]].append((g[-1], lp))
            self._next[n] = {c: (np.array([w for w, _ in v], dtype=np.int64), np.array([p for _, p in v]))
                             for c, v in by_ctx.items()}
        self._unigram = np.full(len(self.words), -np.inf)
        for (w,), (lp, _) in self.grams[1].items():
            self._unigram[w] = lp
        if self.bos is not None:
            self._unigram[self.bos] = -np.inf  # <s> is a context, never predicted

    # ------------------------------------------------------------------------------------------ queries

    @property
    def name(self) -> str:
        return self.source or f"<{self.order}-gram LM>"

    def word_id(self, token: str) -> int:
        """The id of `token`, ``<unk>``'s for a word the model does not know (-1 when it has no ``<unk>``)."""
        i = self.index.get(token)
        if i is None or i == self.bos:
            return self.unk if self.unk is not None else -1
        return i

    def _minimise(self, context: tuple) -> tuple:
        """The longest suffix of `context` (at most order - 1 words) that the model holds as an n-gram. Every later
        probability depends on the history only through it (a longer suffix is in no n-gram: ARPA n-grams need their
        prefixes), so it is the state: fewer distinct states, the same scores."""
        context = context[-(self.order - 1):] if self.order > 1 else ()
        for j in range(len(context), 0, -1):
            if context[-j:] in self.grams[j]:
                return context[-j:]
        return ()

    def _log10(self, context: tuple, w: int) -> float:
        if w < 0:
            return NO_UNK_LOG10
        backoff = 0.0
        for j in range(len(context), -1, -1):
            ctx = context[len(context) - j:]
            hit = self.grams[j + 1].get(ctx + (w,))
            if hit is not None:
                return backoff + hit[0]
            if j:
                c = self.grams[j].get(ctx)
                if c is not None:
                    backoff += c[1]
        return backoff + NO_UNK_LOG10  # not even a unigram: a model without <unk>

    def begin(self) -> tuple:
        """The state after ``<s>``."""
        return self._minimise((self.bos,)) if self.bos is not None else ()

    def score(self, state: tuple, token: str | int) -> tuple[float, tuple]:
        """(ln p(token | state), the state after it); a token the model does not know scores as ``<unk>``."""
        w = self.word_id(token) if isinstance(token, str) else token
        return self._log10(state, w) * LN10, self._minimise(state + (w,))

    def end(self, state: tuple) -> float:
        """ln p(``</s>`` | state)."""
        return self._log10(state, self.eos if self.eos is not None else -1) * LN10

    def sentence_log_prob(self, tokens: Sequence[str], eos: bool = True) -> float:
        """ln p of a sentence from ``<s>`` (to ``</s>`` if `eos`)."""
        state, total = self.begin(), 0.0
        for t in tokens:
            lp, state = self.score(state, t)
            total += lp
        return total + (self.end(state) if eos else 0.0)

    def next_log10(self, state: tuple) -> np.ndarray:
        """log10 p(w | state) for every word id w (``<s>``: -inf): the back-off chain, vectorised over words."""
        lp = self._unigram.copy()
        for j in range(1, len(state) + 1):  # shortest context first; each longer one overrides
            ctx = state[-j:]
            c = self.grams[j].get(ctx)
            if c is not None:
                lp += c[1]
            nxt = self._next[j + 1].get(ctx) if j + 1 <= self.order else None
            if nxt is not None:
                lp[nxt[0]] = nxt[1]
        return lp

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> dict:
        """Per-token perplexity over the sentences, ``</s>`` counted as a token, unknown words scored as ``<unk>``
        (as KenLM's ``query`` reports it); also the perplexity without the unknown words (SRILM's convention) and
        the out-of-vocabulary rate (unknown words / words, ``</s>`` not counted)."""
        total, n_tok, oov, n_words, oov_lp = 0.0, 0, 0, 0, 0.0
        for s in sentences:
            state = self.begin()
            for t in s:
                lp, state = self.score(state, t)
                total += lp
                n_words += 1
                if self.word_id(t) == self.unk or self.word_id(t) < 0:
                    oov += 1
                    oov_lp += lp
            total += self.end(state)
            n_tok += len(s) + 1
        return {
            "perplexity": math.exp(-total / n_tok) if n_tok else float("nan"),
            "perplexity_without_oov": math.exp(-(total - oov_lp) / (n_tok - oov)) if n_tok > oov else float("nan"),
            "oov_rate": oov / n_words if n_words else 0.0,
            "tokens": n_tok, "words": n_words, "oov": oov,
        }

    def bind(self, vocab: Vocabulary, protocol: str = "phoenix2014") -> "VocabLM":
        """This model seen through a CTC model's vocabulary: see :class:`VocabLM`."""
        return VocabLM(self, vocab, protocol)


# ------------------------------------------------------------------------------------------ estimation


def _discounts(counts: Counter, order: int, fallback: Sequence[float]) -> tuple[tuple[float, float, float, float], bool]:
    """(0, D1, D2, D3+) from the counts of adjusted counts 1..4 (Chen & Goodman eq. 26), as lmplz computes them;
    lmplz's fallback when a count of counts is 0 or a discount leaves [0, j]. Returns (discounts, fell_back)."""
    t = Counter(c for c in counts.values() if 0 < c < 5)  # counts of adjusted counts exactly 1, 2, 3, 4
    if all(t[j] > 0 for j in (1, 2, 3)):
        y = t[1] / (t[1] + 2.0 * t[2])
        d = tuple(j - (j + 1) * y * t[j + 1] / t[j] for j in (1, 2, 3))
        if all(0.0 <= d[j - 1] <= j for j in (1, 2, 3)):
            return (0.0, *d), False
    return (0.0, *map(float, fallback)), True


def _log10(x: float) -> float:
    """log10, with SRILM's -99 for 0 (lmplz writes -inf, which would turn lm_weight * log p into NaN at weight 0). A zero
    needs a discount of 0, which tiny corpora can give: every continuation of a context then keeps all its mass."""
    return math.log10(x) if x > 0 else ZERO_LOG10


def estimate_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3,
                        fallback: Sequence[float] = FALLBACK_DISCOUNTS) -> NGramLM:
    """Estimate an interpolated modified Kneser-Ney model, as ``lmplz -o ORDER --discount_fallback`` does.

    Args:
        sentences: token lists (empty ones are skipped); tokens must not be ``<s>``, ``</s>``, ``<unk>`` or hold
            white space.
        order: the n-gram order (>= 1).
        fallback: D1, D2, D3+ for an order whose count statistics give no valid discounts (tiny corpora).

    Returns:
        The model; ``meta`` records the order, token count and each order's discounts.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    sents = [list(s) for s in sentences if len(s)]
    if not sents:
        raise ValueError("no sentences to estimate a language model from")
    vocab_set = set()
    for s in sents:
        for t in s:
            if t in SPECIALS:
                raise ValueError(f"the corpus holds the reserved token {t!r}")
            if not t or any(c.isspace() for c in t):
                raise ValueError(f"token {t!r} is empty or holds white space")
            vocab_set.add(t)
    words = [*SPECIALS, *sorted(vocab_set)]
    idx = {w: i for i, w in enumerate(words)}
    unk, bos, eos = (idx[s] for s in SPECIALS)
    N = order

    # counts[n][g]: adjusted count of n-gram g. Raw counts for the highest order and for <s>-initial n-grams (the
    # window at a sentence's start is shorter than N and begins with <s>).
    counts: list[Counter] = [Counter() for _ in range(N + 1)]
    for s in sents:
        x = [bos, *(idx[t] for t in s), eos]
        for i in range(1, len(x)):
            g = tuple(x[max(0, i - N + 1): i + 1])
            counts[len(g)][g] += 1
    # Lower orders: a non-<s>-initial n-gram's count is its number of distinct left extensions (one per (n+1)-gram).
    for n in range(N - 1, 0, -1):
        for g in counts[n + 1]:
            counts[n][g[1:]] += 1
    counts[1][(unk,)] += 0  # present with count 0: probability only from interpolation
    counts[1][(bos,)] += 0

    grams: list[dict] = [{} for _ in range(N + 1)]
    meta = {"order": N, "tokens": sum(len(s) for s in sents), "sentences": len(sents),
            "smoothing": "modified Kneser-Ney (lmplz-compatible)"}
    prob: list[dict] = [{} for _ in range(N + 1)]  # interpolated probabilities (not logs)
    gamma: list[dict] = [{} for _ in range(N + 1)]  # gamma[n][context of length n - 1]
    uniform = 1.0 / (len(words) - 1)  # <unk> and </s> in, <s> out
    for n in range(1, N + 1):
        D, fell_back = _discounts(counts[n], n, fallback)
        meta[f"discounts_{n}"] = " ".join(f"{d:.6g}" for d in D[1:]) + (" (fallback)" if fell_back else "")
        denom: dict = defaultdict(float)
        kinds: dict = defaultdict(lambda: [0, 0, 0, 0])
        for g, c in counts[n].items():
            if c > 0:
                denom[g[:-1]] += c
                kinds[g[:-1]][min(c, 3)] += 1
        for ctx, k in kinds.items():
            gamma[n][ctx] = sum(D[j] * k[j] for j in (1, 2, 3)) / denom[ctx]
        for g, c in counts[n].items():
            if n == 1 and g == (bos,):
                prob[1][g] = 1.0  # as lmplz: <s> is only a context
                continue
            ctx = g[:-1]
            lower = uniform if n == 1 else prob[n - 1][g[1:]]
            uninterp = (c - D[min(c, 3)]) / denom[ctx] if c > 0 else 0.0
            prob[n][g] = uninterp + gamma[n][ctx] * lower
    for n in range(1, N + 1):
        for g, p in prob[n].items():
            bo = gamma[n + 1].get(g, 1.0) if n < N else 1.0  # a context's backoff is its interpolation weight
            grams[n][g] = (min(0.0, _log10(p)), _log10(bo))
    return NGramLM(order=N, words=words, grams=grams, meta=meta)


# ---------------------------------------------------------------------------------------------- ARPA files


def write_arpa(lm: NGramLM, path: str | os.PathLike) -> None:
    """Write `lm` as an ARPA file: ``# key: value`` header lines (KenLM skips ``#`` lines before ``\\data\\``),
    n-grams sorted by word ids, log10 values with 8 significant digits, no backoff on the highest order."""
    lines = [f"# {k}: {v}" for k, v in lm.meta.items()]
    lines += ["\\data\\", *(f"ngram {n}={len(lm.grams[n])}" for n in range(1, lm.order + 1)), ""]
    for n in range(1, lm.order + 1):
        lines.append(f"\\{n}-grams:")
        for g in sorted(lm.grams[n]):
            lp, bo = lm.grams[n][g]
            text = " ".join(lm.words[w] for w in g)
            lines.append(f"{lp:.8g}\t{text}" + (f"\t{bo:.8g}" if n < lm.order else ""))
        lines.append("")
    lines.append("\\end\\")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _float(value: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise LMFormatError(f"{where}: {value!r} is not a number") from None
    if math.isnan(x) or x == math.inf:
        raise LMFormatError(f"{where}: {value!r} is not a log10 probability")
    return max(x, ZERO_LOG10)  # lmplz's -inf (a zero) as -99: fusion multiplies it by lm_weight, which may be 0


def read_arpa(path: str | os.PathLike) -> NGramLM:
    """Read an ARPA file. Raises FileNotFoundError, or LMFormatError naming the file and line for anything that is
    not a well-formed back-off model (header, counts, field counts, numbers, positive log probabilities, an n-gram
    whose prefix is missing, no ``</s>``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: language model file not found")
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise LMFormatError(f"{path}: not a UTF-8 text ARPA file ({e}); binary KenLM models are not read here") from e
    lines = text.splitlines()
    meta, i = {}, 0
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
        if ":" in lines[i]:
            k, v = lines[i][1:].split(":", 1)
            meta[k.strip()] = v.strip()
        i += 1
    if i == len(lines) or lines[i].strip() != "\\data\\":
        got = lines[i].strip()[:60] if i < len(lines) else "end of file"
        raise LMFormatError(f"{path}:{i + 1}: expected \\data\\ (an ARPA language model), got {got!r}")
    i += 1
    declared = []
    while i < len(lines) and lines[i].strip():
        head, _, num = lines[i].strip().partition("=")
        if not head.startswith("ngram ") or head[6:].strip() != str(len(declared) + 1) or not num.isdigit():
            raise LMFormatError(f"{path}:{i + 1}: expected 'ngram {len(declared) + 1}=COUNT', got {lines[i]!r}")
        declared.append(int(num))
        i += 1
    if not declared:
        raise LMFormatError(f"{path}: \\data\\ declares no n-gram counts")
    order = len(declared)
    words: list[str] = []
    index: dict[str, int] = {}
    grams: list[dict] = [{} for _ in range(order + 1)]
    for n in range(1, order + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines) or lines[i].strip() != f"\\{n}-grams:":
            got = lines[i].strip()[:60] if i < len(lines) else "end of file"
            raise LMFormatError(f"{path}:{i + 1}: expected \\{n}-grams:, got {got!r}")
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("\\"):
            where = f"{path}:{i + 1}"
            fields = lines[i].split()
            if len(fields) not in (n + 1, n + 2):
                raise LMFormatError(f"{where}: a {n}-gram line needs log10 p, {n} word(s) and "
                                    f"{'no backoff' if n == order else 'an optional backoff'}; got {len(fields)} fields")
            lp = _float(fields[0], where)
            if lp > 0:
                raise LMFormatError(f"{where}: positive log10 probability {lp}")
            bo = _float(fields[n + 1], where) if len(fields) == n + 2 else 0.0
            if n == order and bo != 0.0:
                raise LMFormatError(f"{where}: a backoff {bo} on a highest-order n-gram")
            toks = fields[1:n + 1]
            if n == 1:
                if toks[0] in index:
                    raise LMFormatError(f"{where}: unigram {toks[0]!r} listed twice")
                index[toks[0]] = len(words)
                words.append(toks[0])
            try:
                g = tuple(index[t] for t in toks)
            except KeyError as e:
                raise LMFormatError(f"{where}: word {e.args[0]!r} is not among the unigrams") from None
            if n > 1 and g[:-1] not in grams[n - 1]:
                raise LMFormatError(f"{where}: the context {' '.join(toks[:-1])!r} of this {n}-gram is missing")
            grams[n][g] = (lp, bo)
            i += 1
        if len(grams[n]) != declared[n - 1]:
            raise LMFormatError(f"{path}: \\data\\ declares {declared[n - 1]} {n}-grams, the file lists {len(grams[n])}")
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\end\\":
        raise LMFormatError(f"{path}:{i + 1}: expected \\end\\ after the {order}-grams (a truncated file?)")
    if EOS not in index:
        raise LMFormatError(f"{path}: no {EOS} unigram: not a sentence language model")
    return NGramLM(order=order, words=words, grams=grams, meta=meta, source=str(path))


# ------------------------------------------------------------------------------------ weights and loading


def weights_path(lm_path: str | os.PathLike) -> Path:
    """Where tune_lm.py writes the tuned fusion weights of `lm_path`: ``<lm_path>.weights.json``."""
    return Path(str(lm_path) + WEIGHTS_SUFFIX)


def write_weights(lm_path: str | os.PathLike, lm_weight: float, word_bonus: float, **info) -> Path:
    path = weights_path(lm_path)
    atomic_write_json(path, {"lm_weight": float(lm_weight), "word_bonus": float(word_bonus), **info})
    return path


def load_lm(path: str | os.PathLike) -> NGramLM:
    """Read the ARPA file at `path` and, when ``<path>.weights.json`` exists, its tuned weights into ``lm.weights``.
    Raises FileNotFoundError or LMFormatError (a ValueError) naming the file."""
    lm = read_arpa(path)
    wp = weights_path(path)
    if wp.is_file():
        try:
            w = json.loads(wp.read_text("utf-8"))
            lm.weights = {"lm_weight": float(w["lm_weight"]), "word_bonus": float(w["word_bonus"])}
        except (ValueError, KeyError, TypeError) as e:
            raise LMFormatError(f"{wp}: not a weights file with numeric lm_weight and word_bonus ({e})") from e
    return lm


def fusion_weights(lm: NGramLM | None, lm_weight: float | None = None, word_bonus: float | None = None) -> tuple[float, float]:
    """(lm_weight, word_bonus) to decode with: the values given, else the LM's tuned weights, else an error.

    Without an LM: (0, word_bonus or 0). Meant for ``--lm PATH [--lm_weight A] [--word_bonus B]`` flags that
    default to None.
    """
    if lm is None:
        return 0.0, float(word_bonus or 0.0)
    tuned = lm.weights or {}
    a = lm_weight if lm_weight is not None else tuned.get("lm_weight")
    b = word_bonus if word_bonus is not None else tuned.get("word_bonus")
    if a is None or b is None:
        raise ValueError(f"{lm.name}: no fusion weights: pass --lm_weight and --word_bonus, or run launch/tune_lm.py "
                         f"to write {weights_path(lm.source or 'LM')}")
    return float(a), float(b)


def add_lm_args(parser) -> None:
    """--lm PATH [--lm_weight A] [--word_bonus B] on a command line (evaluate.py, compare.py, recognize.py)."""
    parser.add_argument("--lm", default="", help="ARPA gloss LM for shallow fusion in the beam search (launch/train_lm.py)")
    parser.add_argument("--lm_weight", type=float, default=None, help="default: the LM's tuned weights (tune_lm.py)")
    parser.add_argument("--word_bonus", type=float, default=None, help="default: the LM's tuned weights (tune_lm.py)")


def lm_from_args(args) -> tuple[NGramLM | None, float, float]:
    """The flags of `add_lm_args` -> (LM or None, lm_weight, word_bonus); errors name the file."""
    lm = load_lm(args.lm) if args.lm else None
    return (lm, *fusion_weights(lm, args.lm_weight, args.word_bonus))


# --------------------------------------------------------------------------------- the fusion interface


class VocabLM:
    """An :class:`NGramLM` over a CTC model's class ids, with the cache the batched beam search needs.

    Each model gloss goes through the scoring protocol's normalisation (the one the LM's training references got,
    :func:`cslr.eval.wer.reference_from_annotation`): ``loc-REGION`` scores as ``REGION``; a gloss the protocol
    deletes (``__EMOTION__``, ``__PU__``; every ``__X__`` for phoenix2014T) is transparent, log p 0 and the state
    unchanged, as it never reaches the scorer; a gloss the LM does not know scores as ``<unk>``. The blank is
    never scored. States are small integers; ``log_probs(states)`` gathers cached rows.

    Raises LMFormatError naming the LM file when no model gloss is in the LM's vocabulary.
    """

    def __init__(self, lm: NGramLM, vocab: Vocabulary, protocol: str = "phoenix2014"):
        self.lm = lm
        to_lm = np.full(len(vocab), -1, dtype=np.int64)  # -1: transparent (the blank, deleted glosses)
        known = 0
        for g, cls in vocab.index.items():
            norm = reference_from_annotation(g, protocol)
            if norm:
                w = lm.word_id(norm[0])
                to_lm[cls] = w if w >= 0 else -2  # -2: unknown to an LM without <unk>
                known += norm[0] in lm.index and norm[0] not in SPECIALS
        scored = int((to_lm[1:] >= 0).sum()) if len(vocab) > 1 else 0
        if known == 0:
            sample = ", ".join(vocab.glosses[:5])
            raise LMFormatError(f"{lm.name}: none of the model's {len(vocab) - 1} glosses ({sample}, ...) is in the "
                                f"language model's vocabulary of {len(lm.words)} words: an LM of another corpus?")
        self.coverage = known / max(scored, 1)  # share of the scored model glosses the LM knows
        self.to_lm = to_lm
        self._lm_cols = torch.from_numpy(np.where(to_lm >= 0, to_lm, 0))
        self._transparent = torch.from_numpy(to_lm == -1)
        self.states: list[tuple] = []
        self._ids: dict[tuple, int] = {}
        self._next: dict[tuple[int, int], int] = {}
        self._rows = torch.empty((0, len(vocab)), dtype=torch.float64)
        self._eos = torch.empty(0, dtype=torch.float64)
        self.begin_id = self._state_id(lm.begin())

    def _state_id(self, state: tuple) -> int:
        i = self._ids.get(state)
        if i is not None:
            return i
        i = self._ids[state] = len(self.states)
        self.states.append(state)
        lp = torch.from_numpy(self.lm.next_log10(state) * LN10)  # (W,)
        row = torch.where(self._transparent, 0.0, lp[self._lm_cols])  # (V,)
        row[torch.from_numpy(self.to_lm == -2)] = NO_UNK_LOG10 * LN10
        eos = self.lm.end(state)
        if i == len(self._rows):  # grow by doubling
            cap = max(16, 2 * len(self._rows))
            self._rows = torch.cat([self._rows, self._rows.new_zeros((cap - len(self._rows), self._rows.shape[1]))])
            self._eos = torch.cat([self._eos, self._eos.new_zeros(cap - len(self._eos))])
        self._rows[i] = row
        self._eos[i] = eos
        return i

    def begin(self) -> int:
        return self.begin_id

    def advance(self, states: list[int], labels: list[int]) -> list[int]:
        """The state after each (state, class id) pair."""
        out = []
        for s, c in zip(states, labels):
            key = (s, c)
            nxt = self._next.get(key)
            if nxt is None:
                w = int(self.to_lm[c])
                if w == -1:
                    nxt = s  # transparent
                elif w == -2:
                    nxt = self._state_id(())  # an unknown word without <unk> forgets the history, as in KenLM
                else:
                    nxt = self._state_id(self.lm._minimise(self.states[s] + (w,)))
                self._next[key] = nxt
            out.append(nxt)
        return out

    def log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """ln p(class | state) for every class: (...,) state ids -> (..., V) float64 (0 for transparent classes)."""
        return self._rows[states.cpu()]

    def end_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """ln p(``</s>`` | state): (...,) -> (...,) float64."""
        return self._eos[states.cpu()]

    def sequence_log_prob(self, labels: Sequence[int], eos: bool = True) -> float:
        """ln p of a class-id sequence from ``<s>`` (to ``</s>`` if `eos`): the fused LM term, for references."""
        s, total = self.begin_id, 0.0
        for c in labels:
            total += float(self._rows[s, c])
            s = self.advance([s], [c])[0]
        return total + (float(self._eos[s]) if eos else 0.0)
