"""ONNX export of a cslr model and the ONNX Runtime inference path: one graph for any batch, time and frame size.

    python launch/export.py --checkpoint runs/student/best_model.pth --out student.onnx   # the CLI over this module

The graph takes "rgb" uint8 (B, T, 3, H, W) (and "pose" float32 (B, T, 543, 3) for pose models), every frame of
every clip valid (no padding: clips of one batch have one length), and returns "log_probs" float32
(B, ceil(T / 4), V). Batch, time and frame size are dynamic axes: the LSTM's zero initial state is built from the
input's batch (an Expand in the graph) rather than baked in from the example, and the frame encoder's global
average pool takes any H, W (the quality of a model trained at S is another matter).

Tests: `/work/venv/bin/pytest tests/test_export.py -q`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cslr.datasets.schema import NUM_LANDMARKS
from cslr.datasets.writer import load_manifest


class LogProbs(nn.Module):
    """The model's forward on whole clips (no padding), returning only the log-probabilities: the exported graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.inputs = tuple(m for m in ("rgb", "pose") if m in model.cfg.streams)

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


def export_onnx(model: nn.Module, path: str | Path, image_size: int, frames: int = 16, opset: int = 18,
                metadata: dict | None = None) -> Path:
    """Export `model` (eval mode) to `path` with dynamic batch, time and frame size; returns the path.

    Args:
        model: a cslr model (`forward(rgb, pose, lengths)` dict with "log_probs", a `cfg.modality`).
        path: the .onnx file to write.
        image_size: S of the example frames (any size runs afterwards).
        frames: T of the example clip (any T >= 1 runs afterwards).
        opset: ONNX opset version.
        metadata: plain JSON-able facts stored in the graph (`write_metadata`), e.g. what launch/recognize.py
            needs to run the file alone: vocabulary, frame rate, crop.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LogProbs(model.eval()).eval()
    args = example_inputs(wrapper.inputs, 1, frames, image_size)
    axes = {"rgb": {0: "batch", 1: "time", 3: "height", 4: "width"}, "pose": {0: "batch", 1: "time"}}
    # The TorchScript-based exporter: it writes nn.LSTM as one ONNX LSTM node over a symbolic time axis, where
    # torch.export (dynamo=True) unrolls the recurrence over the example's length. A dynamic batch axis makes it
    # expand the LSTM's zero initial state to the input's batch instead of baking in the example's.
    torch.onnx.export(wrapper, args, str(path), input_names=list(wrapper.inputs), output_names=["log_probs"],
                      dynamic_axes={**{n: axes[n] for n in wrapper.inputs}, "log_probs": {0: "batch", 1: "frames"}},
                      opset_version=opset, dynamo=False)
    if metadata is not None:
        write_metadata(path, metadata)
    return path


METADATA_KEY = "cslr"  # the graph's metadata_props entry holding a JSON object
METADATA_FORMAT = "cslr-deploy/1"


def checkpoint_metadata(ck: dict, streams: tuple[str, ...], image_size: int = 0) -> dict:
    """What running a model on a raw video needs besides its weights, from a `best_model.pth` dict: vocabulary,
    input streams, the evaluation transform's crop (data.image_size unless `image_size`, data.crop_scale), the frame
    rate of its training data ("fps": the manifest's, None when the data folder is not here or its videos differ)
    and the scoring protocol."""
    data = ck["config"]["data"]
    manifest = {}
    if data.get("data"):
        try:
            manifest = load_manifest(data["data"])
        except (OSError, ValueError):
            manifest = {}
    fps = manifest.get("fps")
    return {"format": METADATA_FORMAT, "model_name": ck["model_name"], "num_classes": int(ck["num_classes"]),
            "vocab": list(ck["vocab"]), "streams": list(streams), "image_size": int(image_size or data["image_size"]),
            "crop_scale": [float(v) for v in data.get("crop_scale", (0.7, 1.0))],
            "fps": float(fps) if fps else None,
            "protocol": ck.get("protocol") or manifest.get("protocol") or "phoenix2014"}


def write_metadata(path: str | Path, metadata: dict) -> None:
    """Store `metadata` (JSON-able) in the ONNX file's metadata_props under METADATA_KEY (rewrites the file)."""
    import json

    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


def session_metadata(session) -> dict | None:
    """The METADATA_KEY object of an ONNX Runtime session's model, or None when the file has none."""
    import json

    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return None if text is None else json.loads(text)


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (threads 0: the runtime's default), all graph optimisations on."""
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


def parity(model: nn.Module, path: str | Path, image_size: int, frames: int, seed: int = 1, batch: int = 1) -> float:
    """Max abs difference of log-probs between ONNX Runtime and PyTorch on `batch` random clips of `frames` frames."""
    wrapper = LogProbs(model.eval()).eval()
    inputs = example_inputs(wrapper.inputs, batch, frames, image_size, seed)
    with torch.no_grad():
        ref = wrapper(*inputs).numpy()
    got = run_onnx(onnx_session(path), *inputs)
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}")
    return float(np.abs(got - ref).max())
