"""`python launch/prepare.py synthetic ...`: the command line of the synthetic corpus."""

from __future__ import annotations

import argparse
import sys

from . import corpus
from .corpus import prepare_synthetic, preview
from .presets import PRESETS


def add_cli(subparsers) -> None:
    """Register `synthetic` with launch/prepare.py."""
    p = subparsers.add_parser("synthetic", help="generate the built-in synthetic corpus",
                              description=corpus.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--out", required=True, help="output folder (a finished or interrupted run there is resumed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    p.add_argument("--held-out-signer", type=int, default=None, metavar="K",
                   help="signer K (1-based) appears only in dev and test")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--preview", metavar="PNG", default=None,
                   help="also save the frames of the first train video side by side as a PNG contact sheet")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        m = prepare_synthetic(args.out, args.preset, seed=args.seed, workers=args.workers,
                              held_out_signer=args.held_out_signer, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = {s: v["num_samples"] for s, v in m["splits"].items()}
    total = sum(e["bytes"] for v in m["splits"].values() for e in v["shards"])
    print(f"{args.out}: {m['corpus']} {sizes} videos, {m['vocab_size']} glosses, {total / 1e6:.1f} MB")
    if args.preview:
        preview(args.preset, args.preview, seed=args.seed)
    return 0
