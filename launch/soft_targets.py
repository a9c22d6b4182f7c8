"""Teacher soft targets for distillation, as sidecar shards beside the data (format: cslr/datasets/soft_targets.py, generation: cslr/recipes/soft_targets.py).

    accelerate launch launch/soft_targets.py --checkpoint runs/teacher/best_model.pth --data DIR --out DIR-soft
    accelerate launch launch/soft_targets.py --checkpoint ... --out DIR-dense --topk 0 --dtype float32   # all classes
    accelerate launch --num_processes 8 --mixed_precision bf16 launch/soft_targets.py --checkpoint ... --out ...
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/soft_targets.py ...   # CPU, 2 ranks
    python launch/soft_targets.py --data DIR --out DIR-soft --verify     # exit 1 and a list if anything is missing

Rerunning the same command resumes: complete sidecar shards are kept, the others are rewritten.
"""

import argparse
import logging
import os
import sys

from cslr.datasets.soft_targets import SoftTargetError, verify
from cslr.recipes.soft_targets import SoftConfig, generate
from cslr.trainer.runtime import make_accelerator, shutdown_distributed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="the teacher's best_model.pth (not needed with --verify)")
    p.add_argument("--data", default="", help="prepared data folder (default: the one the teacher was trained on)")
    p.add_argument("--out", required=True, help="sidecar folder to write (or to check with --verify)")
    p.add_argument("--split", default="train", choices=["train", "dev", "test"])
    p.add_argument("--topk", type=int, default=10, help="labels kept per frame; 0 = dense (all classes)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored log-probabilities")
    p.add_argument("--batch_size", type=int, default=8, help="consecutive videos per teacher forward")
    p.add_argument("--image_size", type=int, default=0, help="crop size (default: the teacher's)")
    p.add_argument("--overwrite", action="store_true", help="replace soft targets made with other settings")
    p.add_argument("--max_shards", type=int, default=0, help="stop after this many shards per rank (testing)")
    p.add_argument("--verify", action="store_true", help="check completeness and checksums; run no teacher")
    args = p.parse_args(argv)
    for flag, ok, rule in (("--topk", args.topk >= 0, ">= 0 (0: dense)"), ("--temperature", args.temperature > 0, "> 0"),
                           ("--batch_size", args.batch_size >= 1, ">= 1"), ("--image_size", args.image_size >= 0,
                           ">= 0 (0: the teacher's)"), ("--max_shards", args.max_shards >= 0, ">= 0 (0: all)")):
        if not ok:
            p.error(f"{flag} must be {rule}, not {getattr(args, flag[2:])}")

    if args.verify:
        if not args.data:
            p.error("--verify needs --data")
        try:
            problems = verify(args.data, args.out, args.split)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for line in problems:
            print(f"NOT OK {line}")
        print(f"{args.out}: {'OK, complete' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if not args.checkpoint:
        p.error("--checkpoint is required (except with --verify)")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A long collective timeout: ranks wait for each other's shards at the end.
    acc = make_accelerator(timeout_minutes=240)
    if not acc.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    cfg = SoftConfig(checkpoint=args.checkpoint, out=args.out, data=args.data, split=args.split, topk=args.topk,
                     temperature=args.temperature, dtype=args.dtype, batch_size=args.batch_size,
                     image_size=args.image_size, overwrite=args.overwrite, max_shards=args.max_shards)
    try:
        generate(cfg, acc)
        acc.end_training()
    except (SoftTargetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
