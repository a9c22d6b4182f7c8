"""Prepare WebDataset shards (+ vocab.txt, manifest.json) from a corpus.

    python launch/prepare.py synthetic --preset small --out data/synth [--seed 0]
    python launch/prepare.py phoenix2014 --root PATH/phoenix2014-release --out data/phoenix2014 [--pose-dir DIR] [--workers N]
    python launch/prepare.py phoenix2014-si5 --root PATH/phoenix2014-release --out data/phoenix2014-si5
    python launch/prepare.py phoenix2014T --root PATH/PHOENIX-2014-T-release-v3 --out data/phoenix2014T
    python launch/prepare.py csl-daily --root PATH/CSL-Daily --out data/csl-daily [--frame-size 224 224]
    python launch/prepare.py videos --annotations ANN.csv --videos DIR --out data/mine [--fps 25] [--extract-pose]

Every converter takes --pose-dir DIR (<split>/<id>.npy or .pose landmarks) or --extract-pose (MediaPipe Holistic
while converting; needs `pip install -e ".[landmarks]" && pip install --no-deps mediapipe==0.10.21`).
"""

import argparse
import sys

from cslr.datasets import csl_daily, phoenix, synthetic, video_corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="corpus", required=True)
    synthetic.add_cli(sub)
    phoenix.add_cli(sub)
    csl_daily.add_cli(sub)
    video_corpus.add_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
