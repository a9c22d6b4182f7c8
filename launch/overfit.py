"""Overfitting check: train on a few samples until greedy decoding reproduces them (0% WER).

    python launch/overfit.py [--samples 8] [--arch teacher_small] [--data DIR] [--max_steps 600]

Exits 0 printing the step at which the WER reached 0, or 1 with the best WER reached. A model, loss or
decoding bug (a missing log_softmax, misaligned lengths, wrong blank) shows up here in a minute.
"""

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--arch", default="teacher_small")
    p.add_argument("--modality", default="rgb+pose")
    p.add_argument("--data", default="", help="prepared data folder (default: the built-in synthetic corpus)")
    p.add_argument("--image_size", type=int, default=56)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--max_steps", type=int, default=600)
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from cslr.datasets.pipeline import build_loader
    from cslr.datasets.vocab import Vocabulary
    from cslr.trainer.config import TrainConfig
    from cslr.trainer.losses import teacher_loss
    from cslr.trainer.optim import build_optimizer
    from cslr.models.checkpoint import build_model
    from cslr.trainer.trainer import batch_to, evaluate_loader, model_forward, resolve_data
    from cslr.eval.wer import score

    set_seed(args.seed)
    cfg = TrainConfig()
    cfg.data.data, cfg.data.image_size, cfg.data.num_workers = args.data, args.image_size, 0
    cfg.data.batch_size = args.samples
    cfg.model.arch, cfg.model.modality, cfg.model.dropout = args.arch, args.modality, 0.0
    cfg.optim.learning_rate, cfg.optim.weight_decay = args.learning_rate, 0.0
    cfg.data.modalities = tuple(args.modality.split("+"))
    acc = Accelerator(cpu=not torch.cuda.is_available())
    try:
        data_dir = resolve_data(cfg, acc)
        vocab = Vocabulary.load(data_dir / "vocab.txt")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, _ = build_model(cfg.model, len(vocab))
    loader = build_loader(cfg.data, "train", vocab, train=False, output_length=model.output_length)
    batch = next(iter(loader))
    batch = batch_to(batch, acc.device)  # the loader's batch size is --samples
    model.to(acc.device)
    opt = build_optimizer(model, cfg.optim)
    print(f"overfitting {args.arch} ({args.modality}) on {len(batch['keys'])} samples from {data_dir}")
    best, t0 = float("inf"), time.time()
    for step in range(1, args.max_steps + 1):
        model.train()
        loss, _ = teacher_loss(model_forward(model, batch), batch, aux_weight=0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0:
            model.eval()
            hyps, refs = evaluate_loader(acc, model, [batch], vocab, "plain", beam_width=0, desc="overfit eval")
            wer = score(hyps, refs, protocol="plain").wer
            best = min(best, wer)
            print(f"step {step}: loss {loss.item():.4f}, WER {wer:.2f}%  ({time.time() - t0:.0f}s)")
            if wer == 0.0:
                print(f"reached 0% WER at step {step}")
                return 0
    print(f"did not reach 0% WER in {args.max_steps} steps; best WER {best:.2f}%")
    return 1


if __name__ == "__main__":
    sys.exit(main())
