"""Score a trained model on a split with the official WER: breakdown, CTM of hypotheses, per-signer table.

    python launch/evaluate.py --checkpoint runs/teacher/best_model.pth --split test [--data DIR] [--beam 10]
    accelerate launch --num_processes 8 launch/evaluate.py --checkpoint ... --split dev   # across GPUs

Writes <out>/<split>_hyp.ctm and <out>/<split>_wer.json (out defaults to the checkpoint's folder).
`load_for_eval` / `decode_split` are shared with launch/compare.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_for_eval(checkpoint: str | Path, data: str = "", batch_size: int = 8, num_workers: int = 2,
                  splits: tuple[str, ...] = ()):
    """Rebuild the model of `checkpoint` and the evaluation data config: (model, vocab, ck, data_cfg, manifest).

    `data` overrides the folder saved in the checkpoint's config. Raises FileNotFoundError / ValueError naming the
    file (a missing checkpoint or manifest, weights of another model, a split of `splits` the data lacks).
    """
    import dataclasses

    from cslr.datasets.pipeline import DataConfig
    from cslr.datasets.writer import load_manifest
    from cslr.trainer.run import model_from_checkpoint

    model, vocab, ck = model_from_checkpoint(checkpoint)
    known = {f.name for f in dataclasses.fields(DataConfig)}
    data_cfg = DataConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                             for k, v in ck["config"]["data"].items() if k in known})
    data_cfg.data = data or data_cfg.data
    data_cfg.batch_size, data_cfg.num_workers = batch_size, num_workers
    manifest = load_manifest(data_cfg.data)
    for split in splits:
        if split not in manifest["splits"]:
            raise ValueError(f"{data_cfg.data}: no split {split!r} (has {sorted(manifest['splits'])})")
    return model, vocab, ck, data_cfg, manifest


def decode_split(acc, model, vocab, data_cfg, split: str, protocol: str, beam: int, desc: str = "") -> tuple[dict, dict]:
    """Decode every video of `split` (beam width `beam`, 1 = greedy) -> (hyps, refs) as `evaluate_loader` returns
    them: complete on the main process. `model` must already be on `acc.device`."""
    from cslr.datasets.pipeline import build_loader
    from cslr.trainer.trainer import evaluate_loader

    loader = build_loader(data_cfg, split, vocab, train=False, rank=acc.process_index, world_size=acc.num_processes)
    return evaluate_loader(acc, model, loader, vocab, protocol, beam, desc=desc or split)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best_model.pth")
    p.add_argument("--data", default="", help="prepared data folder (default: the one the model was trained on)")
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--beam", type=int, default=10, help="beam width; 1 = greedy")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--protocol", default="", help="phoenix2014 | phoenix2014T | plain (default: from the data)")
    p.add_argument("--out", default="", help="output folder (default: beside the checkpoint)")
    args = p.parse_args(argv)

    from accelerate import Accelerator

    from cslr.trainer.wer import score, write_ctm

    try:
        model, vocab, ck, data_cfg, manifest = load_for_eval(args.checkpoint, args.data, args.batch_size,
                                                             args.num_workers, splits=(args.split,))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    protocol = args.protocol or manifest.get("protocol", "phoenix2014")
    acc = Accelerator()
    model.to(acc.device)
    hyps, refs = decode_split(acc, model, vocab, data_cfg, args.split, protocol, args.beam)
    if acc.is_main_process:
        result = score(hyps, refs, protocol=protocol)
        out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent
        out.mkdir(parents=True, exist_ok=True)
        write_ctm(out / f"{args.split}_hyp.ctm", hyps)
        d = result.as_dict()
        (out / f"{args.split}_wer.json").write_text(json.dumps({**d, "checkpoint": str(args.checkpoint),
                                                                "beam": args.beam, "protocol": protocol}, indent=2))
        print(f"{args.split} WER {d['wer']:.2f}% (S {d['sub']}, D {d['dele']}, I {d['ins']}, N {d['num_ref_words']}, "
              f"{len(hyps)} videos, beam {args.beam}, protocol {protocol})")
        print(result.format_table())
        print(f"hypotheses: {out / f'{args.split}_hyp.ctm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
