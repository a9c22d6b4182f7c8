"""Export a trained student (or any cslr model) to ONNX with a dynamic time axis; check parity with PyTorch.

    python launch/export.py --checkpoint runs/student/best_model.pth --out student.onnx
    python launch/export.py --checkpoint S.pth --out s.onnx --frames 24 --check_frames 41   # export at T=24, check at 41

The graph takes one clip, "rgb" uint8 (1, T, 3, S, S) (and "pose" float32 (1, T, 543, 3) for pose models), any
T >= 1, every frame valid, and returns "log_probs" float32 (1, ceil(T / 4), V). (Batch 1: the exporter would
bake the example's batch into the LSTM's initial state; batch clips in PyTorch.) S is the checkpoint's `data.image_size` unless
--image_size is given. After export, ONNX Runtime runs a random clip of another length and the largest absolute
difference of the log-probabilities against PyTorch is printed (exit 1 above --tolerance, default 1e-3).
`onnx_session` / `run_onnx` are the ONNX Runtime inference path that launch/compare.py also measures.

Tests: `/work/venv/bin/pytest tests/test_export.py -q`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

NUM_LANDMARKS = 543


class LogProbs(nn.Module):
    """The model's forward on whole clips (no padding), returning only the log-probabilities: the exported graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        modality = model.cfg.modality
        self.inputs = tuple(m for m in ("rgb", "pose") if m in modality.split("+"))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The tensors of `self.inputs`, in that order (a pose-only model takes only the landmarks)."""
        return self.model(**dict(zip(self.inputs, inputs)))["log_probs"]  # (B, T', V)


def example_inputs(names: tuple[str, ...], batch: int, frames: int, image_size: int, seed: int = 0) -> tuple:
    """Random uint8 frames (B, T, 3, S, S) and landmarks (B, T, 543, 3) in [0, 1] for the named inputs."""
    g = torch.Generator().manual_seed(seed)
    make = {
        "rgb": lambda: torch.randint(0, 256, (batch, frames, 3, image_size, image_size), dtype=torch.uint8, generator=g),
        "pose": lambda: torch.rand(batch, frames, NUM_LANDMARKS, 3, generator=g),
    }
    return tuple(make[n]() for n in names)


def export_onnx(model: nn.Module, path: str | Path, image_size: int, frames: int = 16, opset: int = 18) -> Path:
    """Export `model` (eval mode) to `path`: one clip (batch 1), any number of frames T; returns the path.

    Args:
        model: a cslr model (`forward(rgb, pose, lengths)` dict with "log_probs", a `cfg.modality`).
        path: the .onnx file to write.
        image_size: S of the example frames (the graph keeps S fixed).
        frames: T of the example clip (any T >= 1 runs afterwards).
        opset: ONNX opset version.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LogProbs(model.eval()).eval()
    args = example_inputs(wrapper.inputs, 1, frames, image_size)
    # The TorchScript-based exporter: it writes nn.LSTM as one ONNX LSTM node over a symbolic time axis, where
    # torch.export (dynamo=True) unrolls the recurrence over the example's length.
    torch.onnx.export(wrapper, args, str(path), input_names=list(wrapper.inputs), output_names=["log_probs"],
                      dynamic_axes={**{n: {1: "time"} for n in wrapper.inputs}, "log_probs": {1: "frames"}},
                      opset_version=opset, dynamo=False)
    return path


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (threads 0: the runtime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session, *inputs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run the exported graph on inputs in its input order -> log-probs (B, T', V) as numpy."""
    names = [i.name for i in session.get_inputs()]
    feeds = {n: (x.numpy() if torch.is_tensor(x) else x) for n, x in zip(names, inputs)}
    return session.run(["log_probs"], feeds)[0]


def parity(model: nn.Module, path: str | Path, image_size: int, frames: int, seed: int = 1) -> float:
    """Max abs difference of log-probs between ONNX Runtime and PyTorch on a random clip of `frames` frames."""
    wrapper = LogProbs(model.eval()).eval()
    inputs = example_inputs(wrapper.inputs, 1, frames, image_size, seed)
    with torch.no_grad():
        ref = wrapper(*inputs).numpy()
    got = run_onnx(onnx_session(path), *inputs)
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}")
    return float(np.abs(got - ref).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best_model.pth of a training run")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--image_size", type=int, default=0, help="frame size S (default: the checkpoint's data.image_size)")
    p.add_argument("--frames", type=int, default=16, help="T of the example clip used to trace (default 16)")
    p.add_argument("--check_frames", type=int, default=37, help="T of the parity check clip (default 37; 0: no check)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs log-prob difference allowed (default 1e-3)")
    args = p.parse_args(argv)

    from cslr.trainer.run import model_from_checkpoint

    try:
        model, vocab, ck = model_from_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = args.image_size or int(ck["config"]["data"]["image_size"])
    path = export_onnx(model, args.out, size, args.frames, args.opset)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {ck['model_name']}, {len(vocab)} classes, "
          f"inputs {LogProbs(model).inputs} at {size}x{size}, batch 1, dynamic time")
    if args.check_frames:
        diff = parity(model, path, size, args.check_frames)
        print(f"parity at T={args.check_frames}: max |log-prob difference| = {diff:.2e} (tolerance {args.tolerance:g})")
        if not diff <= args.tolerance:
            print(f"error: ONNX and PyTorch differ by {diff:.2e} > {args.tolerance:g}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
