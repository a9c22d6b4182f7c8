"""Evaluate a model on a split: decode every sample once across ranks, and the references to score against.

    python launch/evaluate.py --checkpoint runs/teacher/best_model.pth --split test   # the command-line door
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import gather_object

from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest
from cslr.io import Progress
from cslr.models.checkpoint import model_from_checkpoint

from .decode import beam_search, greedy_decode
from .forward import batch_to, model_forward
from .wer import reference_from_annotation


@torch.no_grad()
def evaluate_loader(accelerator, model, loader, vocab: Vocabulary, protocol: str, beam_width: int,
                    forward=model_forward, desc: str = "eval", lm=None, lm_weight: float = 0.0,
                    word_bonus: float = 0.0) -> tuple[dict, dict]:
    """Decode every sample once across ranks. Ranks may hold different batch counts: a rank that has run out
    keeps running forward on its last batch (results dropped) until all are done, so collectives inside the
    forward (DeepSpeed ZeRO-3) stay matched.

    `lm` (a ``cslr.eval.lm.NGramLM``, e.g. from ``load_lm``), `lm_weight`, `word_bonus`: shallow fusion in the beam
    search (beam width at least 1 then; see ``cslr.eval.lm.fusion_weights`` for the weights). Without them the
    decoding is exactly as before: greedy for beam 1, plain beam search otherwise."""
    fusion = lm.bind(vocab, protocol) if lm is not None else None
    fused = fusion is not None or word_bonus != 0.0
    hyps, refs = {}, {}
    it = iter(loader)
    last = None
    multi = accelerator.num_processes > 1
    # tqdm on a terminal; in a log file a line every 30 s of a long pass only (a short one prints nothing)
    bar = Progress(len(loader) if hasattr(loader, "__len__") else None, desc=desc, unit="batches",
                   enabled=accelerator.is_main_process, final=False)
    while True:
        batch = next(it, None)
        if multi:
            more = torch.tensor([0.0 if batch is None else 1.0], device=accelerator.device)
            if accelerator.reduce(more, reduction="sum").item() == 0:
                break
        elif batch is None:
            break
        dummy = batch is None
        if dummy and last is None:
            continue  # this rank had no data at all and its model has no collectives to match (not ZeRO-3)
        batch = last if dummy else batch
        with accelerator.autocast():
            out = forward(model, batch_to(batch, accelerator.device))
        last = batch
        if dummy:
            continue
        bar.update(1)
        lp, lens = out["log_probs"].float().cpu(), out["lengths"].cpu()
        if fused:
            seqs = beam_search(lp, lens, beam_width=max(beam_width, 1), lm=fusion, lm_weight=lm_weight,
                               word_bonus=word_bonus)
        else:
            seqs = beam_search(lp, lens, beam_width=beam_width) if beam_width > 1 else greedy_decode(lp, lens)
        valid = batch.get("valid")
        for i, key in enumerate(batch["keys"]):
            if valid is not None and not bool(valid[i]):
                continue
            hyps[key] = vocab.decode(seqs[i])
            refs[key] = (batch["signers"][i], reference_from_annotation(batch["glosses"][i], protocol))
    bar.close()
    if multi:
        from accelerate.utils import gather_object

        merged_h, merged_r = {}, {}
        for h, r in gather_object([(hyps, refs)]):
            merged_h.update(h)
            merged_r.update(r)
        hyps, refs = merged_h, merged_r
    return hyps, refs


class IncompleteEvaluation(ValueError):
    """A split not every listed video of which was decoded (and no flag allowed that)."""


@dataclass
class Coverage:
    """Which of a split's listed videos an evaluation decoded: `skipped` holds (key, reason) of what the loader
    could not read (a shard's name for a whole shard), `missing` the listed keys decoded by no rank."""

    split: str
    listed: int
    decoded: int
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.decoded == self.listed and not self.missing

    def text(self) -> str:
        s = f"{self.decoded} of {self.listed} listed {self.split} videos decoded"
        if self.complete:
            return s
        reasons = collections.Counter(r for _, r in self.skipped)
        named = ", ".join(f"{k} ({r})" for k, r in self.skipped[:5])
        return (f"{s}; {len(self.missing)} not evaluated (skipped: {dict(reasons)}; e.g. {named or '-'}; "
                f"missing keys e.g. {self.missing[:5]})")

    def as_dict(self) -> dict:
        return {"videos_listed": self.listed, "videos_decoded": self.decoded, "complete": self.complete,
                "skipped": [list(x) for x in self.skipped], "missing": self.missing}

    def check(self, allow_incomplete: bool, flag: str = "--allow_incomplete_eval") -> None:
        """Raise IncompleteEvaluation unless complete or allowed (then the caller says so in its log)."""
        if not self.complete and not allow_incomplete:
            raise IncompleteEvaluation(f"incomplete evaluation: {self.text()}; fix the data, or pass {flag} to "
                                       "score the videos that were decoded")


def split_coverage(accelerator, loader, hyps: dict) -> Coverage:
    """Account for every video the manifest lists for the loader's split (collective: every rank calls it);
    `hyps` as `evaluate_loader` returns them (complete on the main process)."""
    skipped = list(getattr(loader, "skipped", []))
    n_hyps = len(hyps)
    if accelerator.num_processes > 1:
        skipped = [x for part in gather_object([skipped]) for x in part]
    listed = list(getattr(loader, "listed_keys", []) or [])
    if not listed:  # a manifest without key lists: counts only
        listed = sorted(hyps) + [f"?{i}" for i in range(sum(c for _, c in loader.spec.shards) - n_hyps)]
    missing = [k for k in listed if k not in hyps]
    return Coverage(loader.spec.split, len(listed), len(listed) - len(missing),
                    sorted({tuple(x) for x in skipped}), missing)


def load_for_eval(checkpoint: str | Path, data: str = "", batch_size: int = 8, num_workers: int = 2,
                  splits: tuple[str, ...] = ()):
    """Rebuild the model of `checkpoint` and the evaluation data config: (model, vocab, ck, data_cfg, manifest).

    `data` overrides the folder saved in the checkpoint's config. Raises FileNotFoundError / ValueError naming the
    file (a missing checkpoint or manifest, weights of another model, a split of `splits` the data lacks).
    """
    model, vocab, ck = model_from_checkpoint(checkpoint)
    data_cfg = DataConfig.from_dict(ck["config"]["data"])
    data_cfg.data = data or data_cfg.data
    data_cfg.batch_size, data_cfg.num_workers = batch_size, num_workers
    manifest = load_manifest(data_cfg.data)
    for split in splits:
        if split not in manifest["splits"]:
            raise ValueError(f"{data_cfg.data}: no split {split!r} (has {sorted(manifest['splits'])})")
    return model, vocab, ck, data_cfg, manifest


def decode_split(acc, model, vocab, data_cfg, split: str, protocol: str, beam: int, desc: str = "", lm=None,
                 lm_weight: float = 0.0, word_bonus: float = 0.0, coverage: list | None = None,
                 forward=model_forward) -> tuple[dict, dict]:
    """Decode every video of `split` (beam width `beam`, 1 = greedy; `lm`, `lm_weight`, `word_bonus`, `forward` as
    in `evaluate_loader`) -> (hyps, refs) as `evaluate_loader` returns them: complete on the main process. `model` must
    already be on `acc.device`. A `coverage` list receives the split's `Coverage` (collective)."""
    loader = build_loader(data_cfg, split, vocab, train=False, rank=acc.process_index, world_size=acc.num_processes)
    hyps, refs = evaluate_loader(acc, model, loader, vocab, protocol, beam, desc=desc or split, lm=lm,
                                 lm_weight=lm_weight, word_bonus=word_bonus, forward=forward)
    if coverage is not None:
        coverage.append(split_coverage(acc, loader, hyps))
    return hyps, refs
