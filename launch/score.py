"""Score a CTM hypothesis file against an STM reference with the official PHOENIX rules.

    python launch/score.py --hyp dev.ctm --ref phoenix2014-groundtruth-dev.stm [--protocol phoenix2014] [--json out.json]

Prints WER, S/D/I, the number of reference words and a per-signer table. The hypothesis is normalised
here (give the raw model output); references are used as the protocol says (see cslr/eval/wer.py).
Exit status 2 with a message naming the file (and line) on a missing or malformed file.
"""

import argparse
import sys

from cslr.io import atomic_write_json
from cslr.eval.wer import PROTOCOLS, read_ctm, read_stm, score


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", required=True, help="hypothesis CTM (id channel start dur gloss)")
    parser.add_argument("--ref", required=True, help="reference STM (id channel signer start end glosses...)")
    parser.add_argument("--protocol", default="phoenix2014", choices=PROTOCOLS)
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        hyps = read_ctm(args.hyp)
        refs = read_stm(args.ref)
        result = score(hyps, refs, args.protocol)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"WER {result.wer:.2f}%  (S {result.sub}  D {result.dele}  I {result.ins}  N {result.num_ref_words}, "
        f"{result.num_sentences} sentences, protocol {result.protocol})"
    )
    if result.missing_hyps:
        print(f"warning: {len(result.missing_hyps)} references have no hypothesis (scored as deletions), "
              f"e.g. {result.missing_hyps[:3]}", file=sys.stderr)
    print(result.format_table())
    if args.json:
        atomic_write_json(args.json, result.as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
