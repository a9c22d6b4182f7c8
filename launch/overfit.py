"""Overfitting check: train on a few samples until greedy decoding reproduces them (0% WER).

    python launch/overfit.py [--samples 8] [--arch teacher_small] [--data DIR] [--max_steps 600]

Exits 0 printing the step at which the WER reached 0, or 1 with the best WER reached (cslr/recipes/overfit.py).
"""

import argparse
import sys

from cslr.recipes.overfit import overfit, overfit_config


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
    cfg = overfit_config(args.data, args.samples, args.arch, args.modality, args.image_size, args.learning_rate,
                         args.seed)
    try:
        reached, steps, best = overfit(cfg, args.max_steps, args.eval_every)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if reached:
        print(f"reached 0% WER at step {steps}")
        return 0
    print(f"did not reach 0% WER in {args.max_steps} steps; best WER {best:.2f}%")
    return 1


if __name__ == "__main__":
    sys.exit(main())
