"""Prepare WebDataset shards (+ vocab.txt, manifest.json) from a corpus.

    python launch/prepare.py synthetic --preset small --out data/synth [--seed 0]
    python launch/prepare.py phoenix2014 --root PATH/phoenix2014-release --out data/phoenix2014 [--pose-dir DIR] [--workers N]
    python launch/prepare.py phoenix2014-si5 --root PATH/phoenix2014-release --out data/phoenix2014-si5
    python launch/prepare.py phoenix2014T --root PATH/PHOENIX-2014-T-release-v3 --out data/phoenix2014T
"""

import argparse
import sys

from cslr.datasets import phoenix, synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="corpus", required=True)
    synthetic.add_cli(sub)
    phoenix.add_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
