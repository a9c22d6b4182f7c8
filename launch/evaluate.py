"""Score a trained model on a split with the official WER: breakdown, CTM of hypotheses, per-signer table.

    python launch/evaluate.py --checkpoint runs/teacher/best_model.pth --split test [--data DIR] [--beam 10]
    python launch/evaluate.py --checkpoint ... --split test --lm lm.arpa     # shallow fusion, weights tuned on dev
    python launch/evaluate.py --checkpoint student/best_model.pth --pose_stride 2  # landmarks every 2nd frame
    python launch/evaluate.py --checkpoint student/best_model.pth --stream [--window 32 --hop 8]  # live captions
    accelerate launch --num_processes 8 launch/evaluate.py --checkpoint ... --split dev   # across GPUs

Writes <out>/<split>_hyp.ctm and <out>/<split>_wer.json (out defaults to the checkpoint's folder).
--stream: streaming and offline WER side by side -> <out>/<split>_stream_wer.json (cslr/recipes/stream_eval.py).
The work is `cslr.eval.evaluate` (`load_for_eval`, `decode_split`), shared with compare.py and the benchmarks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cslr.eval.evaluate import decode_split, load_for_eval
from cslr.eval.forward import pose_stride_forward
from cslr.recipes.stream_eval import HOP, WINDOW, stream_main
from cslr.eval.lm import add_lm_args, lm_from_args
from cslr.eval.wer import PROTOCOLS, score, write_ctm
from cslr.io import atomic_write_json
from cslr.trainer.runtime import make_accelerator


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best_model.pth")
    p.add_argument("--data", default="", help="prepared data folder (default: the one the model was trained on)")
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--beam", type=int, default=10, help="beam width; 1 = greedy")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--pose_stride", type=int, default=1,
                   help="landmarks kept every K frames and interpolated between, as recognize.py --pose_stride K "
                        "extracts them: its WER cost (a model that takes pose)")
    p.add_argument("--stream", action="store_true",
                   help="also decode each video in streaming windows (recognize.py --stream): its WER cost")
    p.add_argument("--window", type=int, default=WINDOW, help="--stream window, frames (multiple of 4)")
    p.add_argument("--hop", type=int, default=HOP, help="--stream hop, frames (multiple of 4, <= window)")
    p.add_argument("--protocol", default="", choices=["", *PROTOCOLS], help="default: from the data")
    p.add_argument("--out", default="", help="output folder (default: beside the checkpoint)")
    add_lm_args(p)
    p.add_argument("--allow_incomplete", action="store_true",
                   help="score the videos that were read even if some listed ones could not be (else an error)")
    args = p.parse_args(argv)
    for flag, ok in (("--beam", args.beam >= 1), ("--batch_size", args.batch_size >= 1),
                     ("--num_workers", args.num_workers >= 0), ("--pose_stride", args.pose_stride >= 1),
                     ("--window", args.window >= 4 and args.window % 4 == 0),
                     ("--hop", 4 <= args.hop <= args.window and args.hop % 4 == 0)):
        if not ok:
            p.error(f"{flag} must be >= {0 if flag == '--num_workers' else 1}, got {getattr(args, flag[2:])}")

    try:
        model, vocab, ck, data_cfg, manifest = load_for_eval(args.checkpoint, args.data, args.batch_size,
                                                             args.num_workers, splits=(args.split,))
        lm, lm_weight, word_bonus = lm_from_args(args)
        forward = pose_stride_forward(args.pose_stride, model, args.checkpoint)  # a pose model for K > 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    protocol = args.protocol or manifest.get("protocol", "phoenix2014")
    if args.stream:
        return stream_main(args, model, ck, data_cfg, vocab, protocol, lm, lm_weight, word_bonus)
    acc = make_accelerator()
    model.to(acc.device)
    coverage = []
    hyps, refs = decode_split(acc, model, vocab, data_cfg, args.split, protocol, args.beam, coverage=coverage, lm=lm,
                              lm_weight=lm_weight, word_bonus=word_bonus,
                              forward=forward)
    try:
        coverage[0].check(args.allow_incomplete, "--allow_incomplete")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if acc.is_main_process:
        result = score(hyps, refs, protocol=protocol)
        out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent
        out.mkdir(parents=True, exist_ok=True)
        write_ctm(out / f"{args.split}_hyp.ctm", hyps)
        d = result.as_dict()
        atomic_write_json(out / f"{args.split}_wer.json", {**d, "checkpoint": str(args.checkpoint), "beam": args.beam,
                                                          "protocol": protocol, "coverage": coverage[0].as_dict(),
                                                          "lm": args.lm or None, "lm_weight": lm_weight,
                                                          "word_bonus": word_bonus,
                                                          "pose_stride": args.pose_stride})
        print(f"{args.split} WER {d['wer']:.2f}% (S {d['sub']}, D {d['dele']}, I {d['ins']}, N {d['num_ref_words']}, "
              f"{coverage[0].text()}, beam {args.beam}, protocol {protocol}"
              f"{f', pose stride {args.pose_stride}' if args.pose_stride > 1 else ''}"
              f"{f', LM {args.lm} weight {lm_weight:g} bonus {word_bonus:g}' if lm is not None else ''})")
        print(result.format_table())
        print(f"hypotheses: {out / f'{args.split}_hyp.ctm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
