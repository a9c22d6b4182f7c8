"""Overfitting check: the normal training step on a few samples until greedy decoding reproduces them (0% WER).

    python launch/overfit.py [--samples 8] [--arch teacher_small] [--data DIR] [--max_steps 600]

A configuration of the normal loop, not a second one: the same Trainer (its `train_step`: loss with the model's
auxiliary heads weighted by `model.aux_weight`, clipping, optimizer), with no dropout, no weight decay and a
constant learning rate, on one fixed batch of `samples` videos (eval transform). A model, loss or decoding bug (a
missing log_softmax, misaligned lengths, wrong blank) shows up here in a minute.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time

from accelerate.utils import set_seed

from cslr.datasets.pipeline import build_loader
from cslr.datasets.vocab import Vocabulary
from cslr.eval.evaluate import evaluate_loader
from cslr.eval.wer import score
from cslr.models.checkpoint import build_model
from cslr.trainer.config import TrainConfig
from cslr.trainer.trainer import Trainer

from .train import accelerator_for, prepare_data


def overfit_config(data: str, samples: int, arch: str, modality: str, image_size: int, learning_rate: float,
                   seed: int) -> TrainConfig:
    """The default run config changed only where overfitting needs it."""
    cfg = TrainConfig()
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, data=data, image_size=image_size, num_workers=0, batch_size=samples),
        model=dataclasses.replace(cfg.model, arch=arch, modality=modality, dropout=0.0),
        optim=dataclasses.replace(cfg.optim, learning_rate=learning_rate, weight_decay=0.0, warmup_epochs=0.0,
                                  min_lr_ratio=1.0),
        run=dataclasses.replace(cfg.run, seed=seed, report_to="none", output_dir=tempfile.mkdtemp(prefix="overfit-")),
    )


def overfit(cfg: TrainConfig, max_steps: int, eval_every: int, log=print) -> tuple[bool, int, float]:
    """Train on the first batch until 0% WER -> (reached, steps, best WER)."""
    set_seed(cfg.run.seed)
    acc = accelerator_for(cfg)
    data_dir = prepare_data(cfg, acc)
    vocab = Vocabulary.load(data_dir / "vocab.txt")
    model, meta = build_model(cfg.model, len(vocab))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data=str(data_dir), modalities=model.cfg.streams))
    trainer = Trainer(cfg, acc, model, vocab, "plain", meta)
    loader = build_loader(cfg.data, "train", vocab, train=False, output_length=model.output_length)
    batch = next(iter(loader))  # the loader's batch size is the number of samples
    log(f"overfitting {cfg.model.arch} ({cfg.model.modality}) on {len(batch['keys'])} samples from {data_dir}")
    best, t0 = float("inf"), time.time()
    for step in range(1, max_steps + 1):
        trainer.model.train()
        res = trainer.train_step(batch)
        if step % eval_every == 0:
            net = acc.unwrap_model(trainer.model).eval()
            hyps, refs = evaluate_loader(acc, net, [batch], vocab, "plain", beam_width=0, desc="overfit eval")
            wer = score(hyps, refs, protocol="plain").wer
            best = min(best, wer)
            log(f"step {step}: loss {res['loss']:.4f}, WER {wer:.2f}%  ({time.time() - t0:.0f}s)")
            if wer == 0.0:
                return True, step, wer
    return False, max_steps, best
