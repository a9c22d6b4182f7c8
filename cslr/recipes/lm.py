"""Gloss language models for decoding: train one on the training glosses, measure it, tune its fusion weights on dev.

    python launch/train_lm.py --data data/synth --order 3 --out runs/lm/lm.arpa           # a prepared dataset's train split
    python launch/train_lm.py --annotations .../train.corpus.csv --order 3 --out lm.arpa  # a PHOENIX corpus CSV
    python launch/tune_lm.py --checkpoint runs/teacher/best_model.pth --lm runs/lm/lm.arpa [--beam 10]

Training sentences are the annotations after the scoring protocol's normalisation, as the scorer applies it to
references (:func:`cslr.eval.wer.reference_from_annotation`: ``loc-REGION`` -> ``REGION``, ``__EMOTION__`` dropped,
``__ON__``/``__OFF__`` kept for phoenix2014). Tuning runs the model on dev once, keeps the log-probs, and decodes
them for every (lm_weight, word_bonus) of a grid; the best pair goes to ``<lm>.weights.json``, which
``cslr.eval.lm.load_lm`` reads. Test data is never touched.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from cslr.datasets.phoenix import CORPORA, read_corpus_csv
from cslr.datasets.pipeline import build_loader, iter_shard
from cslr.datasets.schema import GLOSS
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest
from cslr.eval.decode import beam_search, greedy_decode
from cslr.eval.evaluate import load_for_eval
from cslr.eval.forward import batch_to, model_forward
from cslr.eval.lm import NGramLM, estimate_kneser_ney, write_arpa, write_weights
from cslr.eval.wer import reference_from_annotation, score

DEFAULT_LM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
DEFAULT_WORD_BONUSES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


# ------------------------------------------------------------------------------------------ sentences


def corpus_csv_sentences(path: str | Path, protocol: str = "") -> tuple[list[list[str]], str]:
    """Normalised gloss sentences of a PHOENIX-style ``*.corpus.csv`` -> (sentences, protocol).

    The corpus is recognised by the CSV header (PHOENIX-2014 / SI5: phoenix2014, 2014-T: phoenix2014T); `protocol`
    overrides the corpus's own. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    first = path.read_text("utf-8-sig").split("\n", 1)[0]
    header = tuple(f.strip() for f in first.split("|"))
    spec = next((s for s in CORPORA.values() if s.header == header), None)
    if spec is None:
        raise ValueError(f"{path}: header {first.strip()!r} is none of the known corpus CSVs "
                         f"({'; '.join(sorted({'|'.join(s.header) for s in CORPORA.values()}))})")
    rows, _ = read_corpus_csv(path, spec)
    protocol = protocol or spec.protocol
    return [reference_from_annotation(r.gloss, protocol) for r in rows], protocol


def dataset_sentences(data: str | Path, split: str = "train", protocol: str = "") -> tuple[list[list[str]], str]:
    """Normalised gloss sentences of a prepared dataset's split (its shards' ``gloss.txt``, nothing decoded)."""
    manifest = load_manifest(data)
    if split not in manifest["splits"]:
        raise ValueError(f"{data}: no split {split!r} (has {sorted(manifest['splits'])})")
    protocol = protocol or manifest.get("protocol", "phoenix2014")
    sentences = []
    for shard in manifest["splits"][split]["shards"]:
        for sample in iter_shard(Path(data) / shard["name"]):
            sentences.append(reference_from_annotation(sample[GLOSS].decode("utf-8"), protocol))
    return sentences, protocol


def train_lm(sentences: Sequence[Sequence[str]], order: int, out: str | Path, protocol: str, source: str = "") -> NGramLM:
    """Estimate a modified Kneser-Ney model of `order` on `sentences` and write it as ARPA to `out`; the header
    records the protocol and the source."""
    lm = estimate_kneser_ney(sentences, order=order)
    lm.meta = {"cslr gloss LM": f"order {order}", "protocol": protocol, "source": source, **lm.meta}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_arpa(lm, out)
    lm.source = str(out)
    return lm


def unigram_perplexity(train: Sequence[Sequence[str]], heldout: Sequence[Sequence[str]]) -> float:
    """Per-token perplexity on `heldout` of the context-free model of `train`: each word's count + 1/2 (``</s>``
    counted, unseen words sharing one ``<unk>``), the baseline that tells how much context predicts. An n-gram
    LM's perplexity over this one is the share of the uncertainty context leaves (PHOENIX-2014 dev: 0.36)."""
    counts = Counter(w for s in train for w in (*s, "</s>"))
    total, size = sum(counts.values()), len(counts) + 1
    heldout_tokens = [w for s in heldout for w in (*s, "</s>")]
    if not heldout_tokens:
        return float("nan")
    log_p = sum(math.log((counts.get(w, 0) + 0.5) / (total + 0.5 * size)) for w in heldout_tokens)
    return math.exp(-log_p / len(heldout_tokens))


# ------------------------------------------------------------------------------ dev log-probs, decoding


@dataclass
class CachedSplit:
    """A model's log-probs on a split, kept to decode many times: per video its (T, V) float32 log-probs."""

    keys: list[str]
    log_probs: list[torch.Tensor]
    refs: dict[str, tuple[str, list[str]]]  # key -> (signer, normalised reference)
    vocab: Vocabulary
    protocol: str
    forward_s: float


@torch.no_grad()
def cache_log_probs(checkpoint: str | Path, data: str = "", split: str = "dev", batch_size: int = 8,
                    num_workers: int = 2, protocol: str = "", device: str | None = None) -> CachedSplit:
    """Run the model of `checkpoint` over `split` once (one process) and keep its log-probs."""
    model, vocab, _, data_cfg, manifest = load_for_eval(checkpoint, data, batch_size, num_workers, splits=(split,))
    protocol = protocol or manifest.get("protocol", "phoenix2014")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    loader = build_loader(data_cfg, split, vocab, train=False)
    keys, lps, refs = [], [], {}
    start = time.perf_counter()
    for batch in loader:
        out = model_forward(model, batch_to(batch, device))
        lp, lens = out["log_probs"].float().cpu(), out["lengths"].cpu()
        valid = batch.get("valid")
        for i, key in enumerate(batch["keys"]):
            if valid is not None and not bool(valid[i]):
                continue
            keys.append(key)
            lps.append(lp[i, : int(lens[i])].clone())
            refs[key] = (batch["signers"][i], reference_from_annotation(batch["glosses"][i], protocol))
    return CachedSplit(keys, lps, refs, vocab, protocol, time.perf_counter() - start)


def decode_cached(cache: CachedSplit, beam: int, lm=None, lm_weight: float = 0.0, word_bonus: float = 0.0,
                  batch_size: int = 16) -> tuple[dict[str, list[str]], float]:
    """Decode every cached video -> (hyps, seconds). Beam 1 without fusion is greedy; `lm` a bound LM (VocabLM)."""
    order = sorted(range(len(cache.keys)), key=lambda i: cache.log_probs[i].shape[0])  # similar lengths together
    hyps: dict[str, list[str]] = {}
    fused = lm is not None or word_bonus != 0.0
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        lens = torch.tensor([cache.log_probs[i].shape[0] for i in idx])
        lp = torch.nn.utils.rnn.pad_sequence([cache.log_probs[i] for i in idx], batch_first=True)  # (B, T, V)
        if beam > 1 or fused:
            seqs = beam_search(lp, lens, beam_width=beam, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
        else:
            seqs = greedy_decode(lp, lens)
        for i, s in zip(idx, seqs):
            hyps[cache.keys[i]] = cache.vocab.decode(s)
    return hyps, time.perf_counter() - start


def tune_weights(cache: CachedSplit, lm: NGramLM, beam: int = 10, lm_weights: Sequence[float] = DEFAULT_LM_WEIGHTS,
                 word_bonuses: Sequence[float] = DEFAULT_WORD_BONUSES, log=print) -> dict:
    """Grid-search (lm_weight, word_bonus) on the cached split -> {"best": {...}, "grid": [...], "baseline": {...}}.

    The lowest WER wins; among equal WERs, the smaller lm_weight, then the word_bonus nearest 0 (so an LM that does
    not help leaves the plain beam search in place). (0, 0) is always tried: it is the plain beam search.
    """
    bound = lm.bind(cache.vocab, cache.protocol)
    grid = []
    pairs = [(0.0, 0.0)] + [(a, b) for a, b in itertools.product(lm_weights, word_bonuses) if (a, b) != (0.0, 0.0)]
    for a, b in pairs:
        hyps, secs = decode_cached(cache, beam, bound, a, b)
        res = score(hyps, cache.refs, protocol=cache.protocol)
        row = {"lm_weight": a, "word_bonus": b, "wer": res.wer, "sub": res.sub, "del": res.dele, "ins": res.ins,
               "decode_s": secs}
        grid.append(row)
        log(f"lm_weight {a:5.2f}  word_bonus {b:5.2f}  WER {res.wer:6.2f}%  (S {res.sub} D {res.dele} I {res.ins})  "
            f"{1000 * secs / max(len(hyps), 1):.1f} ms/video")
    best = min(grid, key=lambda r: (round(r["wer"], 9), r["lm_weight"], abs(r["word_bonus"])))
    return {"best": best, "baseline": grid[0], "grid": grid}


def tune_lm(checkpoint: str | Path, lm_path: str | Path, lm: NGramLM, data: str = "", beam: int = 10,
            lm_weights: Sequence[float] = DEFAULT_LM_WEIGHTS, word_bonuses: Sequence[float] = DEFAULT_WORD_BONUSES,
            batch_size: int = 8, num_workers: int = 2, log=print) -> dict:
    """Cache the dev log-probs of `checkpoint`, grid-search the fusion weights, write ``<lm_path>.weights.json``.

    The result also holds the dev log-probs under "cache" (a CachedSplit), for `decoder_report` to reuse.
    """
    cache = cache_log_probs(checkpoint, data, "dev", batch_size, num_workers)
    log(f"dev: {len(cache.keys)} videos, forward {cache.forward_s:.1f} s (once); protocol {cache.protocol}")
    result = tune_weights(cache, lm, beam, lm_weights, word_bonuses, log=log)
    best, base = result["best"], result["baseline"]
    path = write_weights(lm_path, best["lm_weight"], best["word_bonus"], beam=beam, dev_wer=best["wer"],
                         dev_wer_without_lm=base["wer"], checkpoint=str(checkpoint), split="dev", grid=result["grid"])
    result["weights_path"] = str(path)
    result["cache"] = cache
    return result


def decoder_report(checkpoint: str | Path, lm: NGramLM, lm_weight: float, word_bonus: float, data: str = "",
                   beam: int = 10, splits: Sequence[str] = ("dev", "test"), repeats: int = 3, batch_size: int = 8,
                   num_workers: int = 2, log=print, cached: Mapping[str, CachedSplit] | None = None) -> list[dict]:
    """WER and decoding time of greedy, beam `beam` and beam + LM (the given, dev-tuned weights) on each split.

    The model runs once per split, except on the splits in `cached` (split -> CachedSplit, e.g. tune_lm's dev
    log-probs), which are decoded as they are; each decoder decodes the cached log-probs `repeats` times and the
    fastest run gives ms per sentence (decoding only, batches of 16, this process's torch threads). Rows: split,
    decoder, wer, sub, del, ins, words, ms_per_sentence, and for the LM row the share of the beam's errors it removes.
    """
    rows = []
    for split in splits:
        cache = (cached or {}).get(split)
        if cache is None:
            cache = cache_log_probs(checkpoint, data, split, batch_size, num_workers)
        bound = lm.bind(cache.vocab, cache.protocol)
        plain = None
        for name, kw in (("greedy", dict(beam=1)), (f"beam {beam}", dict(beam=beam)),
                         (f"beam {beam} + LM", dict(beam=beam, lm=bound, lm_weight=lm_weight, word_bonus=word_bonus))):
            runs = [decode_cached(cache, **kw) for _ in range(max(1, repeats))]
            hyps, secs = runs[0][0], min(r[1] for r in runs)
            res = score(hyps, cache.refs, protocol=cache.protocol)
            errors = res.sub + res.dele + res.ins
            row = {"split": split, "decoder": name, "wer": res.wer, "sub": res.sub, "del": res.dele, "ins": res.ins,
                   "words": res.num_ref_words, "errors": errors, "ms_per_sentence": 1000 * secs / max(len(hyps), 1)}
            if name == f"beam {beam}":
                plain = row
            elif plain is not None and "LM" in name:
                row["errors_removed"] = (plain["errors"] - errors) / max(plain["errors"], 1)
                row["slowdown"] = row["ms_per_sentence"] / max(plain["ms_per_sentence"], 1e-9)
            rows.append(row)
            log(f"{split:5s} {name:16s} WER {res.wer:6.2f}%  (S {res.sub} D {res.dele} I {res.ins} of "
                f"{res.num_ref_words})  {row['ms_per_sentence']:.2f} ms/sentence")
    return rows


def report_markdown(rows: list[dict], title: str) -> str:
    """The rows of `decoder_report` as a markdown table (one line per split and decoder)."""
    lines = [f"| {title} | split | decoder | WER % (S/D/I) | ms / sentence | errors removed by the LM |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        gain = (f"{100 * r['errors_removed']:.0f} % ({r['slowdown']:.1f}x the beam's time)"
                if "errors_removed" in r else "")
        lines.append(f"| | {r['split']} | {r['decoder']} | {r['wer']:.2f} ({r['sub']}/{r['del']}/{r['ins']}) | "
                     f"{r['ms_per_sentence']:.2f} | {gain} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ simulated model outputs


def simulate_split(sentences: Sequence[Sequence[str]], vocab: Vocabulary, protocol: str = "phoenix2014", seed: int = 0,
                   confusion: float = 0.4, weak: float = 0.1, noise: float = 1.0) -> CachedSplit:
    """CTC log-probs of an imperfect recogniser on known sentences, to measure decoders without a trained model.

    Each gloss gets 2-5 frames, blank-dominated except one peak frame where its class scores high; with probability
    `confusion` a random other gloss competes at that peak as strongly, with probability `weak` the gloss's peak is
    weak (a likely deletion); every frame has N(0, noise) logits on every class. Glosses outside `vocab` are left
    out. What an LM can recover here (the competing gloss is random, so context tells it apart) is an upper bound
    of sorts; real confusions are between similar signs.
    """
    rng = torch.Generator().manual_seed(seed)
    V = len(vocab)
    keys, lps, refs = [], [], {}
    for n, sent in enumerate(sentences):
        ids = [vocab.index[g] for g in sent if g in vocab.index]
        durs = torch.randint(2, 6, (len(ids),), generator=rng).tolist()
        T = max(sum(durs), 1)
        logits = torch.randn(T, V, generator=rng) * noise  # (T, V)
        logits[:, 0] += 5.0
        t = 0
        for c, d in zip(ids, durs):
            peak = t + int(torch.randint(0, d, (1,), generator=rng))
            u = torch.rand(3, generator=rng).tolist()
            logits[peak, c] += (3.0 if u[0] < weak else 7.0) + 1.5 * float(torch.randn(1, generator=rng))
            if u[1] < confusion:
                other = int(torch.randint(1, V, (1,), generator=rng))
                logits[peak, other] += 7.0 + 1.5 * float(torch.randn(1, generator=rng))
            t += d
        key = f"sim{n:05d}"
        keys.append(key)
        lps.append(logits.log_softmax(-1))
        refs[key] = ("sim", list(sent))
    return CachedSplit(keys, lps, refs, vocab, protocol, 0.0)
