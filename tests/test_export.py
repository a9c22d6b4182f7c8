"""ONNX export (cslr/models/export.py, CLI launch/export.py): parity with PyTorch (max abs log-prob difference <= 1e-3)
on clips of other lengths, batch sizes and frame sizes than the example exported (dynamic axes), for the BiLSTM
and conv heads and the teacher, through the API and the CLI.

Run: `/work/venv/bin/pytest tests/test_export.py -q`
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import REPO, randomise_norms, run_cmd
from cslr.models import export
from cslr.models.registry import build_model

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name, kwargs", [
    ("student_tiny", dict(head="lstm", modality="rgb")), ("student_tiny", dict(head="conv", modality="rgb")),
    ("student_tiny", dict(head="lstm", modality="rgb+pose")), ("teacher_tiny", dict(modality="rgb+pose")),
    ("student_tiny", dict(head="lstm", modality="rgb", hand_crop=8)),  # RoiAlign, soft-argmax at any frame size
    ("student_tiny", dict(head="conv", modality="rgb", hand_crop=8, backbone_pool=2)),  # + the pooled backbone
])
def test_onnx_parity_with_dynamic_batch_time_and_size(name, kwargs, tmp_path):
    """T = 5, 7, 23 are not multiples of 4: length arithmetic traced at the example's T = 8 would show there."""
    torch.manual_seed(0)
    model = randomise_norms(build_model(name, 9, **kwargs)).eval()
    path = export.export_onnx(model, tmp_path / "s.onnx", image_size=32, frames=8)
    session = export.onnx_session(path, threads=1)
    names = export.LogProbs(model).inputs
    for B, T, S in ((1, 1, 32), (1, 5, 32), (3, 8, 32), (3, 23, 32), (2, 7, 48)):  # exported at B=1, T=8, S=32
        inputs = export.example_inputs(names, B, T, S, seed=T)
        if "pose" in names:
            inputs[1][:, ::2, 501:] = float("nan")  # hands missing every other frame, as MediaPipe leaves them
        got = export.run_onnx(session, *inputs)
        with torch.no_grad():
            ref = model(**dict(zip(names, inputs)))["log_probs"].numpy()
        assert got.shape == ref.shape == (B, -(-T // 4), 9) and not np.isnan(got).any()
        assert abs(got - ref).max() <= 1e-3, (B, T, S, abs(got - ref).max())


def test_export_cli_writes_and_checks(tmp_path):
    from cslr.models.checkpoint import save_portable

    model = randomise_norms(build_model("student_tiny", 5)).eval()
    save_portable(tmp_path / "s.pth", model.state_dict(), {
        "config": {"data": {"image_size": 24}}, "vocab": ["A", "B", "C", "D"], "model_name": "student_tiny",
        "model_kwargs": {"modality": "rgb", "dropout": 0.1}, "num_classes": 5})
    proc = run_cmd([sys.executable, str(REPO / "launch" / "export.py"), "--checkpoint", str(tmp_path / "s.pth"),
                    "--out", str(tmp_path / "s.onnx"), "--frames", "12", "--check_frames", "29"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "s.onnx").is_file() and "parity at B=2, T=29" in proc.stdout and "24x24" in proc.stdout
    bad = run_cmd([sys.executable, str(REPO / "launch" / "export.py"), "--checkpoint", str(tmp_path / "no.pth"),
                   "--out", str(tmp_path / "x.onnx")], timeout=120)
    assert bad.returncode == 2 and "no.pth not found" in bad.stderr


def test_graph_inputs_follow_the_modality_pose_only_included():
    """A pose-only teacher takes only landmarks: the exported graph's forward must pass them as `pose`."""
    torch.manual_seed(0)
    model = build_model("teacher_tiny", 9, modality="pose").eval()
    wrapped = export.LogProbs(model)
    assert wrapped.inputs == ("pose",)
    (pose,) = export.example_inputs(wrapped.inputs, 1, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(pose), model(pose=pose)["log_probs"])
