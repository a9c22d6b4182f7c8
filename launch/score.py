"""Score a CTM hypothesis file against an STM reference with the official PHOENIX rules.

    python launch/score.py --hyp dev.ctm --ref phoenix2014-groundtruth-dev.stm [--protocol phoenix2014] [--json out.json]

    python launch/score.py --hyp runs/student-rgb/test_hyp.ctm --synthetic small --split test

Prints WER, S/D/I, the number of reference words and a per-signer table. With `--synthetic PRESET` the
references are the built-in corpus's (its plan: no data needed) and the substitutions are split by what
separates the two glosses in the generator's inventory: hand shape only, trajectory only, both
(`cslr/eval/synthetic_errors.py`). The hypothesis is normalised
here (give the raw model output); references are used as the protocol says (see cslr/eval/wer.py).
Exit status 2 with a message naming the file (and line) on a missing or malformed file.
"""

import argparse
import sys

from cslr.io import atomic_write_json
from cslr.eval.synthetic_errors import synthetic_score
from cslr.eval.wer import PROTOCOLS, read_ctm, read_stm, score


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", required=True, help="hypothesis CTM (id channel start dur gloss)")
    refs = parser.add_mutually_exclusive_group(required=True)
    refs.add_argument("--ref", help="reference STM (id channel signer start end glosses...)")
    refs.add_argument("--synthetic", metavar="PRESET", help="the built-in synthetic corpus's references (its plan)")
    parser.add_argument("--split", default="test", help="--synthetic: the split (train, dev, test)")
    parser.add_argument("--seed", type=int, default=0, help="--synthetic: the corpus seed")
    parser.add_argument("--protocol", default="phoenix2014", choices=PROTOCOLS)
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    by = None
    try:
        hyps = read_ctm(args.hyp)
        if args.synthetic:
            result, by = synthetic_score(hyps, args.synthetic, args.split, args.seed, args.protocol)
        else:
            result = score(hyps, read_stm(args.ref), args.protocol)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"WER {result.wer:.2f}%  (S {result.sub}  D {result.dele}  I {result.ins}  N {result.num_ref_words}, "
        f"{result.num_sentences} sentences, protocol {result.protocol})"
    )
    if by is not None:
        print("substitutions by what separates the glosses: " + ", ".join(
            f"{k} {v} ({100 * v / max(result.sub, 1):.0f} %)" for k, v in by.items()))
    if result.missing_hyps:
        print(f"warning: {len(result.missing_hyps)} references have no hypothesis (scored as deletions), "
              f"e.g. {result.missing_hyps[:3]}", file=sys.stderr)
    print(result.format_table())
    if args.json:
        atomic_write_json(args.json, {**result.as_dict(), **({"substitutions_by": by} if by is not None else {})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
