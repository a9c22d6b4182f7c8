"""Compare trained models (a teacher and its students): WER, size and inference speed, side by side.

    python launch/compare.py --teacher runs/teacher/best_model.pth --student runs/student/best_model.pth --data DIR
    python launch/compare.py --model big=T.pth --model small=S.pth --model conv=S2.pth --out compare/

Writes <out>/compare.json, compare.md (a table) and compare.png; what is measured and how: cslr/recipes/compare.py.
"""

from __future__ import annotations

import argparse
import sys

from cslr.eval.lm import add_lm_args
from cslr.recipes.compare import compare, parse_entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", action="append", default=[], help="teacher best_model.pth (the ratios' reference)")
    p.add_argument("--student", action="append", default=[], help="student best_model.pth (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="any model (repeatable)")
    p.add_argument("--data", default="", help="prepared data folder (default: each checkpoint's own)")
    p.add_argument("--out", default="compare", help="output folder (default compare/)")
    p.add_argument("--beam", type=int, default=10, help="beam width for WER; 1 = greedy (default 10)")
    p.add_argument("--protocol", default="", help="phoenix2014 | phoenix2014T | plain (default: from the data)")
    p.add_argument("--eval_batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the speed runs (default 2)")
    p.add_argument("--image_size", type=int, default=224, help="frame size of the speed runs (default 224)")
    p.add_argument("--frames", type=int, default=64, help="frames per clip in the speed runs (default 64)")
    p.add_argument("--batch", type=int, default=8, help="clips per batch in the batched speed runs (default 8)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per speed figure (default 5)")
    p.add_argument("--no_onnx", action="store_true", help="skip the ONNX Runtime measurement")
    add_lm_args(p)
    args = p.parse_args(argv)
    for flag in ("beam", "threads", "image_size", "frames", "batch", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1")
    return compare(args, parse_entries(args, p))


if __name__ == "__main__":
    sys.exit(main())
