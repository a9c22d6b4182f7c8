"""Export a trained student (or any cslr model) to ONNX (dynamic batch, time and frame size); check parity with PyTorch.

    python launch/export.py --checkpoint runs/student/best_model.pth --out student.onnx
    python launch/export.py --checkpoint S.pth --out s.onnx --frames 24 --check_frames 41   # export at T=24, check at 41

The graph takes "rgb" uint8 (B, T, 3, H, W) (and "pose" float32 (B, T, 543, 3) for pose models), any B, T >= 1
and frame size, every frame valid, and returns "log_probs" float32 (B, ceil(T / 4), V) (cslr/models/export.py,
which this CLI wraps). The file also carries the vocabulary, frame rate and crop (metadata "cslr"), so that
launch/recognize.py runs it without the checkpoint. The example clip is S x S, S the checkpoint's
`data.image_size` unless --image_size is given. After export, ONNX Runtime runs two random clips of another length and the largest absolute difference
of the log-probabilities against PyTorch is printed (exit 1 above --tolerance, default 1e-3).

Tests: `/work/venv/bin/pytest tests/test_export.py -q`
"""

from __future__ import annotations

import argparse
import sys

from cslr.models.export import LogProbs, checkpoint_metadata, export_onnx, parity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best_model.pth of a training run")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--image_size", type=int, default=0, help="frame size S (default: the checkpoint's data.image_size)")
    p.add_argument("--frames", type=int, default=16, help="T of the example clip used to trace (default 16)")
    p.add_argument("--check_frames", type=int, default=37, help="T of the parity check clips, 2 of them (default 37; 0: no check)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs log-prob difference allowed (default 1e-3)")
    args = p.parse_args(argv)

    from cslr.models.checkpoint import model_from_checkpoint

    try:
        model, vocab, ck = model_from_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = args.image_size or int(ck["config"]["data"]["image_size"])
    meta = checkpoint_metadata(ck, LogProbs(model).inputs, size)  # launch/recognize.py runs the .onnx alone
    path = export_onnx(model, args.out, size, args.frames, args.opset, metadata=meta)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {ck['model_name']}, {len(vocab)} classes, "
          f"inputs {LogProbs(model).inputs}, example {size}x{size}, dynamic batch, time and frame size")
    if args.check_frames:
        diff = parity(model, path, size, args.check_frames, batch=2)
        print(f"parity at B=2, T={args.check_frames}: max |log-prob difference| = {diff:.2e} (tolerance {args.tolerance:g})")
        if not diff <= args.tolerance:
            print(f"error: ONNX and PyTorch differ by {diff:.2e} > {args.tolerance:g}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
