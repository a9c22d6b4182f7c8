"""Train a gloss n-gram language model (modified Kneser-Ney, ARPA) on the training glosses, for decoding.

    python launch/train_lm.py --data data/synth --order 3 --out runs/lm/lm.arpa
    python launch/train_lm.py --annotations ../shared/reference/phoenix2014/train.corpus.csv --order 3 --out lm.arpa \
        [--eval ../shared/reference/phoenix2014/dev.corpus.csv]   # also print perplexity and OOV rate there
    python launch/train_lm.py --data data/synth --out lm.arpa --eval data/synth   # a prepared folder: its dev/test

The glosses are normalised as the scorer normalises references (`__ON__`/`__OFF__` kept). Then
`python launch/tune_lm.py --checkpoint C --lm lm.arpa` tunes the fusion weights on dev. See cslr/recipes/lm.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cslr.datasets.writer import load_manifest
from cslr.eval.lm import LMFormatError
from cslr.recipes.lm import corpus_csv_sentences, dataset_sentences, train_lm, unigram_perplexity


def _eval_sets(paths: list[str], protocol: str):
    """(name, sentences) of each --eval: a corpus CSV, or each non-train split of a prepared data folder."""
    for path in paths:
        if Path(path).is_dir():
            for split in sorted(load_manifest(path)["splits"]):
                if split != "train":
                    yield f"{path} {split}", dataset_sentences(path, split, protocol)[0]
        else:
            yield path, corpus_csv_sentences(path, protocol)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="prepared data folder (launch/prepare.py): its train split's glosses")
    src.add_argument("--annotations", help="a PHOENIX-style *.corpus.csv of training annotations")
    p.add_argument("--order", type=int, default=3, help="n-gram order, 2 or more (KenLM reads no unigram-only model)")
    p.add_argument("--out", required=True, help="the ARPA file to write")
    p.add_argument("--protocol", default="", help="phoenix2014 | phoenix2014T | plain (default: the data's)")
    p.add_argument("--eval", action="append", default=[],
                   help="a corpus CSV, or a prepared data folder (its splits other than train): report the "
                        "perplexity there, and a unigram's for comparison (repeatable)")
    args = p.parse_args(argv)
    if args.order < 2:
        p.error("--order must be 2 or more")
    try:
        if args.data:
            sentences, protocol = dataset_sentences(args.data, "train", args.protocol)
        else:
            sentences, protocol = corpus_csv_sentences(args.annotations, args.protocol)
        lm = train_lm(sentences, args.order, args.out, protocol, source=args.data or args.annotations)
        print(f"{args.out}: {args.order}-gram LM, {lm.meta['sentences']} sentences, {lm.meta['tokens']} glosses, "
              f"{len(lm.words) - 3} words, protocol {protocol}, "
              f"n-grams {' '.join(str(len(g)) for g in lm.grams[1:])}")
        for name, heldout in _eval_sets(args.eval, protocol):
            ppl = lm.perplexity(heldout)
            uni = unigram_perplexity(sentences, heldout)
            print(f"{name}: perplexity {ppl['perplexity']:.2f} (without OOV {ppl['perplexity_without_oov']:.2f}), "
                  f"OOV {100 * ppl['oov_rate']:.2f}% of {ppl['words']} glosses; a unigram's {uni:.2f}, "
                  f"context leaves {ppl['perplexity'] / uni:.2f} of it")
    except (FileNotFoundError, ValueError, LMFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
