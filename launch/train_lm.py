"""Train a gloss n-gram language model (modified Kneser-Ney, ARPA) on the training glosses, for decoding.

    python launch/train_lm.py --data data/synth --order 3 --out runs/lm/lm.arpa
    python launch/train_lm.py --annotations ../shared/reference/phoenix2014/train.corpus.csv --order 3 --out lm.arpa \
        [--eval ../shared/reference/phoenix2014/dev.corpus.csv]   # also print perplexity and OOV rate there

The glosses are normalised as the scorer normalises references (`__ON__`/`__OFF__` kept). Then
`python launch/tune_lm.py --checkpoint C --lm lm.arpa` tunes the fusion weights on dev. See cslr/recipes/lm.py.
"""

from __future__ import annotations

import argparse
import sys

from cslr.eval.lm import LMFormatError
from cslr.recipes.lm import corpus_csv_sentences, dataset_sentences, train_lm


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="prepared data folder (launch/prepare.py): its train split's glosses")
    src.add_argument("--annotations", help="a PHOENIX-style *.corpus.csv of training annotations")
    p.add_argument("--order", type=int, default=3, help="n-gram order, 2 or more (KenLM reads no unigram-only model)")
    p.add_argument("--out", required=True, help="the ARPA file to write")
    p.add_argument("--protocol", default="", help="phoenix2014 | phoenix2014T | plain (default: the data's)")
    p.add_argument("--eval", action="append", default=[], help="a corpus CSV to report perplexity on (repeatable)")
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
        for path in args.eval:
            ppl = lm.perplexity(corpus_csv_sentences(path, protocol)[0])
            print(f"{path}: perplexity {ppl['perplexity']:.2f} (without OOV {ppl['perplexity_without_oov']:.2f}), "
                  f"OOV {100 * ppl['oov_rate']:.2f}% of {ppl['words']} glosses")
    except (FileNotFoundError, ValueError, LMFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
