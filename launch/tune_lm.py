"""Tune the LM fusion weights on dev: run the model once, grid-search lm_weight x word_bonus, write the best.

    python launch/tune_lm.py --checkpoint runs/teacher/best_model.pth --lm runs/lm/lm.arpa [--data DIR] [--beam 10]

Writes <lm>.weights.json beside the LM (read by cslr.eval.lm.load_lm, so `--lm PATH` decodes with them).
Only the dev split is read for tuning. `--report` then decodes dev (the log-probs kept from tuning, so the model
runs on dev once) and test with greedy, beam and beam + LM (the tuned weights), prints a markdown table of WER and
ms per sentence and writes it to <checkpoint dir>/lm_report.json.
See cslr/recipes/lm.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cslr.eval.lm import LMFormatError, load_lm
from cslr.io import atomic_write_json
from cslr.recipes.lm import DEFAULT_LM_WEIGHTS, DEFAULT_WORD_BONUSES, decoder_report, report_markdown, tune_lm


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best_model.pth")
    p.add_argument("--lm", required=True, help="ARPA file (launch/train_lm.py)")
    p.add_argument("--data", default="", help="prepared data folder (default: the one the model was trained on)")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--lm_weights", type=_floats, default=list(DEFAULT_LM_WEIGHTS), help="comma-separated grid")
    p.add_argument("--word_bonuses", type=_floats, default=list(DEFAULT_WORD_BONUSES), help="comma-separated grid")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--report", action="store_true", help="then decode dev and test with and without the LM: a table")
    args = p.parse_args(argv)
    try:
        lm = load_lm(args.lm)
        result = tune_lm(args.checkpoint, args.lm, lm, args.data, args.beam, args.lm_weights, args.word_bonuses,
                         args.batch_size, args.num_workers)
    except (FileNotFoundError, ValueError, LMFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best, base = result["best"], result["baseline"]
    print(f"best: lm_weight {best['lm_weight']} word_bonus {best['word_bonus']}: dev WER {best['wer']:.2f}% "
          f"(beam {args.beam} without LM {base['wer']:.2f}%) -> {result['weights_path']}")
    if args.report:
        rows = decoder_report(args.checkpoint, lm, best["lm_weight"], best["word_bonus"], args.data, args.beam,
                              batch_size=args.batch_size, num_workers=args.num_workers,
                              cached={"dev": result["cache"]})  # dev's log-probs from the tuning: no second pass
        out = Path(args.checkpoint).resolve().parent / "lm_report.json"
        atomic_write_json(out, {"checkpoint": str(args.checkpoint), "lm": args.lm, "lm_weight": best["lm_weight"],
                                "word_bonus": best["word_bonus"], "beam": args.beam, "rows": rows})
        print(report_markdown(rows, Path(args.checkpoint).resolve().parent.name))
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
