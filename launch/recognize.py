"""Recognise the glosses of video files or streams with a trained model (PyTorch checkpoint or exported ONNX).

    python launch/recognize.py --checkpoint runs/student/best_model.pth clip.mp4 [more.mp4 ...]
    python launch/recognize.py --checkpoint student.onnx clip.mp4 --ctm out.ctm --json out.json --threads 2
    python launch/recognize.py --checkpoint best_model.pth clip.mp4 --stream [--window 32 --hop 8]

Prints `VIDEO: GLOSS ...` per video on stdout (with --stream, the settled glosses as they come first) and the timings
on stderr. Exit status 2 with a message naming the file for a video, model or option it cannot use.
The work is `cslr.recipes.recognize` (see its docstring for the transform, the CTM times and the streaming rule).

Tests: `pytest tests/test_recognize.py -q`
"""

from __future__ import annotations

import argparse
import sys

from cslr.recipes import recognize


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=recognize.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recognize.add_args(p)
    args = p.parse_args(argv)
    recognize.check_args(p, args)
    return recognize.main(args)


if __name__ == "__main__":
    sys.exit(main())
