"""What the trackers (W&B online or offline, TensorBoard) show of a run, besides the loss and lr of the loop.

At every evaluation (dev after an epoch, test of the best model), built on the main process from the hypotheses
the evaluation already decoded (no extra forward pass), under the split's prefix (`dev/`, `test/`):

- scalars: `wer`, `sub`, `del`, `ins` (counts), `signer_wer/<signer>`;
- tables: `predictions` (every sentence: video id, signer, reference, hypothesis, its S/D/I and WER), `worst`
  (the N sentences with the most errors), `sample` (a fixed sample of N videos, the same at every evaluation, to
  watch them change), `per_signer` (WER and S/D/I per signer), `confusion` (the N most frequent substitutions,
  reference -> hypothesis gloss). W&B gets `wandb.Table`s, TensorBoard markdown text (TEXT tab).

While training (`Throughput`, `peak_memory`): samples/s, input frames/s and head tokens/s (output frames of the
model's CTC head), the data-wait fraction, the peak memory (CUDA where present, the process's RSS always).

At the end (`log_summary`): the run summary (best dev WER, its epoch, test WER) as W&B summary values and
TensorBoard `summary/` scalars and text, and the best checkpoint as a W&B artifact by reference (the file stays
where it is; the artifact records its path, size and checksum).
"""

from __future__ import annotations

import collections
import logging
import math
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cslr.eval.wer import SentenceScore, WERResult, sentence_scores

logger = logging.getLogger("cslr")

PREDICTION_COLUMNS = ["video_id", "signer", "reference", "hypothesis", "sub", "del", "ins", "errors", "ref_words",
                      "wer"]
SIGNER_COLUMNS = ["signer", "sentences", "ref_words", "sub", "del", "ins", "wer"]
CONFUSION_COLUMNS = ["reference", "hypothesis", "count", "share_of_substitutions"]


# ------------------------------------------------------------------------------------------- throughput, memory
@dataclass
class Throughput:
    """Work done since `t0`: samples, input frames, head tokens, seconds blocked on the loader (all ranks: this
    rank's counts times the ranks, as `samples_seen` counts)."""

    samples: float = 0.0
    frames: float = 0.0
    tokens: float = 0.0
    wait_s: float = 0.0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, samples: float, frames: float, tokens: float, wait_s: float) -> None:
        self.samples += samples
        self.frames += frames
        self.tokens += tokens
        self.wait_s += wait_s

    def rates(self, prefix: str) -> dict:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return {f"{prefix}/samples_per_s": self.samples / elapsed, f"{prefix}/frames_per_s": self.frames / elapsed,
                f"{prefix}/tokens_per_s": self.tokens / elapsed,
                f"{prefix}/data_wait_fraction": min(1.0, self.wait_s / elapsed)}


def peak_memory(device: torch.device) -> dict:
    """{"system/peak_rss_mb"} of this process, and {"system/peak_cuda_mb"} (allocated by torch) on CUDA."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"system/peak_rss_mb": rss / (2 ** 20 if sys.platform == "darwin" else 1024)}
    if device.type == "cuda":
        out["system/peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


# ------------------------------------------------------------------------------------------- tables
def _pct(x: float) -> float | None:
    """A percentage for a table cell; None (empty) where it is undefined (errors against no reference word)."""
    return round(x, 2) if math.isfinite(x) else None


def prediction_row(s: SentenceScore) -> list:
    return [s.utt, s.signer, " ".join(s.ref), " ".join(s.hyp), s.sub, s.dele, s.ins, s.errors, len(s.ref),
            _pct(s.wer)]


def evaluation_tables(sentences: list[SentenceScore], result: WERResult, rows: int, seed: int = 0) -> dict:
    """name -> (columns, rows) of one evaluation: predictions, worst, sample, per_signer, confusion."""
    preds = [prediction_row(s) for s in sentences]
    worst = sorted(sentences, key=lambda s: (-s.errors, -s.wer if math.isfinite(s.wer) else -1e9, s.utt))[:rows]
    ids = sorted(s.utt for s in sentences)
    chosen = set(random.Random(seed).sample(ids, min(rows, len(ids))))  # the same videos at every evaluation
    signers = [[sig, p["sentences"], p["n"], p["sub"], p["del"], p["ins"], _pct(p["wer"])]
               for sig, p in sorted(result.per_signer.items())]
    pairs = collections.Counter(pair for s in sentences for pair in s.substitutions)
    total = sum(pairs.values())
    confusion = [[r, h, n, round(100.0 * n / total, 2)] for (r, h), n in
                 sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:rows]]
    return {
        "predictions": (PREDICTION_COLUMNS, preds),
        "worst": (PREDICTION_COLUMNS, [prediction_row(s) for s in worst]),
        "sample": (PREDICTION_COLUMNS, [prediction_row(s) for s in sentences if s.utt in chosen]),
        "per_signer": (SIGNER_COLUMNS, signers),
        "confusion": (CONFUSION_COLUMNS, confusion),
    }


def markdown(columns: list[str], rows: list[list]) -> str:
    """A markdown table (TensorBoard's text plugin renders it)."""
    def cell(v) -> str:
        return "-" if v is None or v == "" else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) if rows else "\n".join(lines) + "\n\n(none)"


# ------------------------------------------------------------------------------------------- the trackers
class Dashboard:
    """Writes the evaluation tables and the run summary to the accelerator's trackers; scalars go through
    `accelerator.log` (every tracker), tables through each tracker's own writer. Main process only; a no-op
    without trackers."""

    def __init__(self, accelerator, rows: int = 20, seed: int = 0):
        self.acc, self.rows, self.seed = accelerator, rows, seed

    def _tracker(self, name: str):
        if not self.acc.is_main_process or not any(t.name == name for t in self.acc.trackers):
            return None
        return self.acc.get_tracker(name, unwrap=True)

    @property
    def active(self) -> bool:
        return self.acc.is_main_process and bool(self.acc.trackers)

    def log_evaluation(self, split: str, hyps: dict, refs: dict, result: WERResult, protocol: str, step: int) -> None:
        """The scalars and tables of one evaluation (`hyps`, `refs` as `evaluate_loader` returns them)."""
        if not self.active:
            return
        scalars = {f"{split}/wer": result.wer, f"{split}/sub": result.sub, f"{split}/del": result.dele,
                   f"{split}/ins": result.ins}
        scalars.update({f"{split}/signer_wer/{sig}": p["wer"] for sig, p in sorted(result.per_signer.items())})
        self.acc.log({k: float(v) for k, v in scalars.items() if math.isfinite(v)}, step=step)
        tables = evaluation_tables(sentence_scores(hyps, refs, protocol), result, self.rows, self.seed)
        run = self._tracker("wandb")
        if run is not None:
            import wandb

            run.log({f"{split}/{name}": wandb.Table(columns=cols, data=rows) for name, (cols, rows) in tables.items()},
                    step=step)
        writer = self._tracker("tensorboard")
        if writer is not None:
            for name, (cols, rows) in tables.items():
                writer.add_text(f"{split}/{name}", markdown(cols, rows), global_step=step)
            writer.flush()

    def log_summary(self, results: dict, best_model: Path | None, step: int) -> None:
        """The run summary (best dev WER, its epoch, test WER) and the best checkpoint as an artifact reference."""
        if not self.active:
            return
        summary = {k: results.get(k) for k in ("best_dev_wer", "best_epoch", "test_wer")}
        uri = best_model.resolve().as_uri() if best_model is not None and best_model.is_file() else None
        run = self._tracker("wandb")
        if run is not None:
            run.summary.update({**summary, "best_checkpoint": uri})
            if uri is not None:
                self._log_artifact(run, best_model, uri, summary)
        writer = self._tracker("tensorboard")
        if writer is not None:
            for k, v in summary.items():
                if v is not None:
                    writer.add_scalar(f"summary/{k}", float(v), global_step=step)
            rows = [[k, "-" if v is None else v] for k, v in summary.items()] + [["best_checkpoint", uri or "-"]]
            writer.add_text("summary/run", markdown(["item", "value"], rows), global_step=step)
            writer.flush()

    @staticmethod
    def _log_artifact(run, path: Path, uri: str, summary: dict) -> None:
        import wandb

        try:
            art = wandb.Artifact(f"best-model-{run.id}", type="model",
                                 metadata={k: v for k, v in summary.items() if v is not None})
            art.add_reference(uri, name=path.name)
            run.log_artifact(art, aliases=["best"])
        except Exception as e:  # a tracker problem must not fail a finished run
            logger.warning("W&B: could not log the best checkpoint as an artifact: %s", e)
