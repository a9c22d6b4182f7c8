"""Teacher model tests: registry contract, exact lengths, padding invariance, pose normalisation, autocast.

Run: `/work/venv/bin/pytest tests/test_models.py -q`
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import randomise_norms
from cslr.datasets.schema import LANDMARK_SLICES, NUM_LANDMARKS, POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER
from cslr.models.heads import BiLSTMHead, TemporalConv, conv_output_length
from cslr.models.i3d import I3D, scale_channels
from cslr.models.pose import PoseEncoder, landmark_indices, normalise_landmarks
from cslr.models.registry import MODELS, build_model, build_teacher, count_parameters, list_models
from cslr.models.teacher import Teacher, TeacherConfig

V = 7  # classes including the blank
TEACHERS = [m for m in list_models() if m.startswith("teacher")]


def make_pose(B: int, T: int, seed: int = 0, missing: float = 0.2) -> torch.Tensor:
    """Random landmarks in [0, 1] with shoulders ~0.2 apart and a fraction of NaN (undetected)."""
    g = torch.Generator().manual_seed(seed)
    pose = torch.rand(B, T, NUM_LANDMARKS, 3, generator=g)
    pose[:, :, POSE_LEFT_SHOULDER, :2] = torch.tensor([0.6, 0.5])
    pose[:, :, POSE_RIGHT_SHOULDER, :2] = torch.tensor([0.4, 0.5])
    pose[torch.rand(B, T, NUM_LANDMARKS, generator=g) < missing] = float("nan")
    return pose


def make_rgb(B: int, T: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, 3, size, size), dtype=torch.uint8, generator=g)


def assert_log_probs(lp: torch.Tensor):
    assert lp.dtype == torch.float32
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(lp.shape[:-1]), atol=1e-5, rtol=0)


# --- I3D ------------------------------------------------------------------------------------------


def test_i3d_full_width_has_12_29m_parameters():
    backbone = I3D(width_mult=1.0)
    n = count_parameters(backbone)
    assert abs(n - 12.29e6) / 12.29e6 < 0.005, n
    assert backbone.out_channels == 1024
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 3 + 9 * 6  # stem + 9 Inception blocks x 6 convs
    assert all(c.bias is None for c in convs)


def test_scale_channels():
    assert [scale_channels(c, 1.0) for c in (16, 24, 64, 384)] == [16, 24, 64, 384]
    for w in (0.1, 0.125, 0.25, 0.5, 0.75):
        for c in (16, 24, 48, 64, 192, 384):
            out = scale_channels(c, w)
            assert out % 8 == 0 and out >= 8 and out >= 0.9 * c * w


@pytest.mark.parametrize("size", [1, 7, 32, 33])
def test_i3d_any_frame_size(size):
    feats, lengths = I3D(0.125).eval()(make_rgb(2, 5, size), torch.tensor([5, 3]))
    assert feats.shape == (2, 2, I3D(0.125).out_channels) and lengths.tolist() == [2, 1]


def test_i3d_uint8_equals_float_input():
    model = I3D(0.125).eval()
    rgb = make_rgb(1, 6)
    torch.testing.assert_close(model(rgb)[0], model(rgb.float())[0])


# --- lengths -----------------------------------------------------------------------------------------


def test_streams_have_identical_exact_lengths():
    i3d, pose = I3D(0.125).eval(), PoseEncoder(hidden=8).eval()
    T = torch.arange(1, 301)
    expected = (T + 3) // 4  # ceil(T / 4)
    assert torch.equal(i3d.output_length(T), expected) and torch.equal(pose.output_length(T), expected)
    assert [i3d.output_length(t) for t in range(1, 301)] == expected.tolist()
    with torch.no_grad():
        for t in range(1, 301):  # only the pose encoder's temporal block changes the length: every T
            assert pose.temporal(torch.randn(1, t, 8))[0].shape[1] == expected[t - 1], t
        for t in list(range(1, 34)) + [64, 97, 150, 299, 300]:  # whole encoders; I3D on 2x2 frames
            assert pose(make_pose(1, t))[0].shape[1] == expected[t - 1], t
            assert i3d(make_rgb(1, t, 2))[0].shape[1] == expected[t - 1], t


@pytest.mark.parametrize("kernels,padding", [
    (("K5", "P2", "K5", "P2"), "same"),
    (("K5", "P2", "K5", "P2"), "valid"),
    (("K3", "P3", "K5", "P2", "K1"), "same"),
])
def test_temporal_conv_output_length_matches_shapes(kernels, padding):
    block = TemporalConv(4, 8, kernels, padding=padding).eval()
    lengths = range(16 if padding == "valid" else 1, 80)
    for t in lengths:
        out, _ = block(torch.randn(1, t, 4))
        assert out.shape == (1, block.output_length(t), 8), t
    assert block.output_length(torch.tensor(list(lengths))).tolist() == [block.output_length(t) for t in lengths]
    if kernels == ("K5", "P2", "K5", "P2"):
        expect = (lambda t: math.ceil(t / 4)) if padding == "same" else (lambda t: ((t - 4) // 2 - 4) // 2)
        assert all(block.output_length(t) == expect(t) for t in lengths)


def test_conv_output_length_against_pytorch_pools():
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for p in range(k // 2 + 1):
                for ceil in (False, True):
                    pool = nn.MaxPool1d(k, s, p, ceil_mode=ceil)
                    for t in range(max(1, k - 2 * p), 30):
                        assert pool(torch.zeros(1, 1, t)).shape[-1] == conv_output_length(t, k, s, p, ceil), (k, s, p, ceil, t)


# --- padding invariance ------------------------------------------------------------------------------


def test_temporal_conv_and_lstm_padding_invariance():
    torch.manual_seed(0)
    conv, lstm = randomise_norms(TemporalConv(6, 8)).eval(), BiLSTMHead(8, 5).eval()
    x = torch.randn(3, 40, 6)
    lengths = torch.tensor([40, 23, 9])
    with torch.no_grad():
        y, out_len = conv(x, lengths)
        h = lstm(y, out_len)
        for i, n in enumerate(lengths.tolist()):
            yi, li = conv(x[i:i + 1, :n], torch.tensor([n]))
            torch.testing.assert_close(y[i:i + 1, :li.item()], yi, atol=1e-5, rtol=1e-5)
            assert (y[i, li.item():] == 0).all()
            # Reference: the plain (unpacked) LSTM on the sample alone.
            ref, _ = lstm.lstm(yi)
            torch.testing.assert_close(h[i:i + 1, :li.item()], ref, atol=1e-5, rtol=1e-5)
            assert (h[i, li.item():] == 0).all()


@pytest.mark.parametrize("modality", ["rgb", "pose", "rgb+pose"])
def test_teacher_padding_invariance(modality):
    """In eval mode a sample's outputs do not depend on the padding after it (I3D, pose and BiLSTM)."""
    torch.manual_seed(0)
    model = randomise_norms(build_teacher("teacher_tiny", V, modality=modality)).eval()
    T, lengths = 23, torch.tensor([23, 18, 13, 6])
    rgb, pose = make_rgb(4, T), make_pose(4, T)
    with torch.no_grad():
        batch = model(rgb=rgb, pose=pose, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(rgb=rgb[i:i + 1, :n], pose=pose[i:i + 1, :n], lengths=torch.tensor([n]))
            m = alone["lengths"].item()
            assert batch["lengths"][i].item() == m == model.output_length(n)
            for key in ("log_probs", "features"):
                torch.testing.assert_close(batch[key][i, :m], alone[key][0], atol=1e-4, rtol=1e-4)
            for name, lp in alone["aux"].items():
                torch.testing.assert_close(batch["aux"][name][i, :m], lp[0], atol=1e-4, rtol=1e-4)


# --- pose normalisation ------------------------------------------------------------------------------


def test_pose_normalisation_reference_and_invariance():
    pose = make_pose(1, 5, missing=0.0)
    pose[0, 2, POSE_LEFT_SHOULDER] = float("nan")  # frame 2 lost a shoulder: use the video's mean frame
    idx = landmark_indices(["right_hand"])
    valid = torch.ones(1, 5, dtype=torch.bool)
    out = normalise_landmarks(pose, idx, valid)  # (1, 5, 21, 4)
    # Reference: centre (0.5, 0.5), width 0.2 in every frame (the video mean for frame 2).
    ref_xy = (pose[0, :, idx, :2] - 0.5) / 0.2
    torch.testing.assert_close(out[0, ..., :2], ref_xy)
    torch.testing.assert_close(out[0, ..., 2], pose[0, :, idx, 2] / 0.2)
    assert (out[..., 3] == 1).all()
    # Invariance: moving and scaling the whole body (shoulders included) changes nothing.
    moved = pose.clone()
    moved[..., :2] = moved[..., :2] * 1.7 + torch.tensor([0.3, -0.2])
    moved[..., 2] *= 1.7
    torch.testing.assert_close(normalise_landmarks(moved, idx, valid), out, atol=1e-5, rtol=1e-5)


def test_pose_normalisation_missing_shoulders_and_landmarks():
    pose = make_pose(2, 4, missing=0.3)
    pose[:, :, [POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER]] = float("nan")  # no shoulders in any frame
    idx = landmark_indices(["upper_body", "left_hand", "right_hand", "mouth"])
    assert len(idx) == 25 + 21 + 21 + 40
    valid = torch.tensor([[True] * 4, [True, True, False, False]])
    out = normalise_landmarks(pose, idx, valid)
    assert not out.isnan().any()
    present = ~pose[:, :, idx].isnan().any(-1) & valid[..., None]
    assert torch.equal(out[..., 3].bool(), present)
    assert (out[~present] == 0).all()
    # Fallback frame: centre 0, scale 1 -> the raw coordinates.
    torch.testing.assert_close(out[..., :3][present], pose[:, :, idx][present])


def test_pose_parts_errors():
    with pytest.raises(ValueError, match="unknown"):
        landmark_indices(["tail"])
    assert landmark_indices(["left_hand"]) == list(range(LANDMARK_SLICES["left_hand"].start, LANDMARK_SLICES["left_hand"].stop))


# --- the teacher contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_contract(name):
    """Every preset: forward, backward, a gradient for every parameter, no NaN with NaN landmarks."""
    torch.manual_seed(0)
    model = build_teacher(name, V).train()
    B, T = 2, 9
    lengths = torch.tensor([9, 5])
    out = model(rgb=make_rgb(B, T), pose=make_pose(B, T, missing=0.5), lengths=lengths)
    Tp = model.output_length(T)
    assert out["log_probs"].shape == (B, Tp, V)
    assert out["lengths"].dtype == torch.int64 and out["lengths"].tolist() == [Tp, model.output_length(5)]
    assert out["features"].shape == (B, Tp, model.cfg.fusion_dim)
    assert set(out["aux"]) == {"rgb", "pose"}
    for lp in [out["log_probs"], *out["aux"].values()]:
        assert lp.shape == (B, Tp, V)
        assert_log_probs(lp)
    loss = sum(lp[..., 1:].mean() for lp in [out["log_probs"], *out["aux"].values()])
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("fc.weight"))


def test_teacher_base_matches_spec():
    model = build_teacher("teacher_base", 1232)
    assert count_parameters(model.encoders["rgb"]) == count_parameters(I3D(1.0))
    assert model.temporal.out_dim == 1024 and model.temporal.lstm.num_layers == 2


@pytest.mark.parametrize("modality", ["rgb", "pose"])
def test_single_modality(modality):
    model = build_teacher("teacher_tiny", V, modality=modality)
    assert list(model.encoders) == [modality] and len(model.aux_heads) == 0
    inputs = {"rgb": make_rgb(2, 8), "pose": make_pose(2, 8)}
    out = model(**{modality: inputs[modality]}, lengths=torch.tensor([8, 4]))
    assert out["aux"] == {} and out["log_probs"].shape == (2, 2, V)
    assert_log_probs(out["log_probs"])
    out["log_probs"].mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    other = "pose" if modality == "rgb" else "rgb"
    with pytest.raises(ValueError, match=modality):
        model(**{other: inputs[other]})


def test_teacher_input_errors():
    model = build_teacher("teacher_tiny", V).eval()
    with pytest.raises(ValueError, match="pose"):
        model(rgb=make_rgb(1, 4))
    with pytest.raises(ValueError, match="frame counts"):
        model(rgb=make_rgb(1, 4), pose=make_pose(1, 5))
    with pytest.raises(ValueError, match="lengths"):
        model(rgb=make_rgb(1, 4), pose=make_pose(1, 4), lengths=torch.tensor([5]))
    with pytest.raises(ValueError, match="543"):
        model(rgb=make_rgb(1, 4), pose=torch.zeros(1, 4, 75, 3))
    with pytest.raises(ValueError, match="modality"):
        TeacherConfig(num_classes=V, modality="depth")


def test_bf16_autocast_returns_fp32_log_probs():
    torch.manual_seed(0)
    model = build_teacher("teacher_tiny", V).eval()
    rgb, pose, lengths = make_rgb(2, 12), make_pose(2, 12), torch.tensor([12, 7])
    with torch.no_grad():
        ref = model(rgb=rgb, pose=pose, lengths=lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(rgb=rgb, pose=pose, lengths=lengths)
    for lp in [out["log_probs"], *out["aux"].values()]:
        assert_log_probs(lp)
    assert out["features"].dtype == torch.bfloat16  # the convs did run in bf16
    # bf16 has ~3 significant digits: the distributions stay close to fp32's.
    torch.testing.assert_close(out["log_probs"].exp(), ref["log_probs"].exp(), atol=0.05, rtol=0)
    # Backward under autocast (training with bf16 AMP).
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(rgb=rgb, pose=pose, lengths=lengths)
    sum(lp[..., 1:].mean() for lp in [out["log_probs"], *out["aux"].values()]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --- registry ----------------------------------------------------------------------------------------


def test_registry():
    assert {"teacher_tiny", "teacher_small", "teacher_base"} <= set(list_models()) == set(MODELS)
    model = build_teacher("teacher_tiny", V, modality="pose", lstm_hidden=3)
    assert isinstance(model, Teacher) and model.cfg.modality == "pose" and model.temporal.out_dim == 6
    assert isinstance(build_model("teacher_tiny", V), Teacher)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.classifier.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - count_parameters(model.classifier)
    with pytest.raises(ValueError, match="teacher_tiny"):
        build_teacher("teacher_huge", V)
    with pytest.raises(TypeError, match="lstm_hiden"):
        build_teacher("teacher_tiny", V, lstm_hiden=3)
    sizes = [count_parameters(build_teacher(n, V)) for n in ("teacher_tiny", "teacher_small")]
    assert sizes[0] < sizes[1]
