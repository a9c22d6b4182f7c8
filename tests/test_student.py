"""Student model tests: registry presets, exact lengths (= the teacher's), padding invariance, log-probabilities,
gradients, conv head and pose stream, local pretrained weights, checkpoint round trip.

Run: `/work/venv/bin/pytest tests/test_student.py -q`
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from cslr.models.registry import build_model, count_parameters, list_models
from cslr.models.checkpoint import load_pretrained_backbone
from conftest import randomise_norms
from test_models import assert_log_probs, make_pose, make_rgb

V = 7


def test_presets_are_registered_and_ordered_by_size():
    assert {"student_tiny", "student_small", "student_base"} <= set(list_models())
    sizes = [count_parameters(build_model(n, V)) for n in ("student_tiny", "student_small", "student_base")]
    assert sizes == sorted(sizes) and sizes[0] < 0.3e6 and 1e6 < sizes[1] < 5e6, sizes
    teacher = build_model("teacher_small", V)
    assert build_model("student_tiny", V).output_length(torch.arange(1, 200)).tolist() == \
        teacher.output_length(torch.arange(1, 200)).tolist()


@pytest.mark.parametrize("head", ["lstm", "conv"])
def test_lengths_exact_and_log_probs(head):
    model = build_model("student_tiny", V, head=head).eval()
    with torch.no_grad():
        for T in (1, 2, 3, 4, 5, 8, 13, 17):
            out = model(make_rgb(2, T, 16), lengths=torch.tensor([T, max(1, T - 2)]))
            assert out["log_probs"].shape[1] == model.output_length(T) == -(-T // 4), T
            assert out["lengths"].tolist() == [model.output_length(T), model.output_length(max(1, T - 2))]
            assert_log_probs(out["log_probs"])
            assert out["aux"] == {}


@pytest.mark.parametrize("kw", [dict(head="lstm"), dict(head="conv"), dict(modality="rgb+pose")])
def test_padding_invariance(kw):
    """A sample's output is the same alone and padded in a batch (eval mode, trained-like norm statistics)."""
    model = randomise_norms(build_model("student_tiny", V, **kw)).eval()
    rgb, pose = make_rgb(2, 14, 16, seed=1), make_pose(2, 14, seed=1)
    with torch.no_grad():
        both = model(rgb, pose, lengths=torch.tensor([14, 9]))
        alone = model(rgb[1:, :9], pose[1:, :9], lengths=torch.tensor([9]))
    n = int(alone["lengths"][0])
    torch.testing.assert_close(both["log_probs"][1, :n], alone["log_probs"][0], atol=1e-5, rtol=1e-4)
    assert torch.equal(both["features"][1, n:], torch.zeros_like(both["features"][1, n:]))


def test_every_parameter_gets_a_gradient():
    model = build_model("student_tiny", V, modality="rgb+pose").train()
    out = model(make_rgb(2, 9, 16), make_pose(2, 9), lengths=torch.tensor([9, 6]))
    sum(lp.sum() for lp in [out["log_probs"], *out["aux"].values()]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("modality", ["rgb", "rgb+pose"])
def test_aux_heads_classify_each_stream_in_training_only(modality):
    """One auxiliary CTC classifier per stream, fed by that stream's features alone, and none at inference."""
    model = randomise_norms(build_model("student_tiny", V, modality=modality)).train()
    rgb, pose = make_rgb(2, 9, 16), make_pose(2, 9)
    out = model(rgb, pose, lengths=torch.tensor([9, 6]))
    assert set(out["aux"]) == set(modality.split("+"))
    for name, lp in out["aux"].items():
        assert lp.shape == out["log_probs"].shape, name
        assert_log_probs(lp)
        model.zero_grad()
        lp.sum().backward(retain_graph=True)
        touched = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        own = {"rgb": {"frames", "temporal"}, "pose": {"pose"}}[name]
        assert touched == own | {"aux_heads"}, (name, touched)  # not the sequence head, not the other stream
    with torch.no_grad():
        assert model.eval()(rgb, pose, lengths=torch.tensor([9, 6]))["aux"] == {}
    assert len(build_model("student_tiny", V, modality=modality, aux_heads=False).aux_heads) == 0


def test_pose_is_required_only_for_pose_models():
    with pytest.raises(ValueError, match="needs a 'pose' input"):
        build_model("student_tiny", V, modality="rgb+pose")(make_rgb(1, 4, 16))
    with pytest.raises(ValueError, match="modality"):
        build_model("student_tiny", V, modality="pose")


def test_pretrained_backbone_from_a_local_file(tmp_path):
    ref = torchvision.models.mobilenet_v3_small(weights=None)  # stands in for the ImageNet file
    torch.save(ref.state_dict(), tmp_path / "mnv3s.pth")
    model = build_model("student_small", V)
    assert load_pretrained_backbone(model, tmp_path / "mnv3s.pth") == len(ref.features.state_dict())
    for k, v in ref.features.state_dict().items():
        assert torch.equal(model.frames.features.state_dict()[k], v), k
    with pytest.raises(ValueError, match="width_mult 1.0"):
        load_pretrained_backbone(build_model("student_tiny", V), tmp_path / "mnv3s.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained_backbone(model, tmp_path / "nope.pth")
    # --pretrained for a teacher was silently ignored before: now it is an error naming the model
    with pytest.raises(ValueError, match="Teacher has no MobileNetV3 backbone"):
        load_pretrained_backbone(build_model("teacher_tiny", V), tmp_path / "mnv3s.pth")


def test_checkpoint_round_trip(tmp_path):
    from cslr.models.checkpoint import save_portable
    from cslr.models.checkpoint import model_from_checkpoint

    model = randomise_norms(build_model("student_tiny", V, head="conv")).eval()
    save_portable(tmp_path / "s.pth", model.state_dict(), {
        "config": {}, "vocab": [f"G{i}" for i in range(V - 1)], "model_name": "student_tiny",
        "model_kwargs": {"head": "conv", "dropout": 0.1}, "num_classes": V})
    again, vocab, _ = model_from_checkpoint(tmp_path / "s.pth")
    rgb = make_rgb(1, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(rgb)["log_probs"], model(rgb)["log_probs"])
    assert len(vocab) == V

    # A student saved before the auxiliary heads existed still loads (they only train); other gaps do not.
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("aux_heads.")}
    meta = {"config": {}, "vocab": [f"G{i}" for i in range(V - 1)], "model_name": "student_tiny",
            "model_kwargs": {"head": "conv", "dropout": 0.1}, "num_classes": V}
    save_portable(tmp_path / "old.pth", old, meta)
    again, _, _ = model_from_checkpoint(tmp_path / "old.pth")
    assert len(again.aux_heads) == 0
    with torch.no_grad():
        torch.testing.assert_close(again(rgb)["log_probs"], model(rgb)["log_probs"])
    save_portable(tmp_path / "bad.pth", {k: v for k, v in old.items() if not k.startswith("classifier.")}, meta)
    with pytest.raises(ValueError, match="missing"):
        model_from_checkpoint(tmp_path / "bad.pth")


def test_nhwc_backbone_computes_what_an_nchw_copy_computes():
    """The frame encoder runs channels_last (speed); its weights in either layout give the same log-probs."""
    torch.manual_seed(0)
    model = randomise_norms(build_model("student_tiny", 9)).eval()
    conv = next(m for m in model.frames.features.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    nchw = build_model("student_tiny", 9).eval()
    nchw.frames.set_layout(channels_last=False)
    nchw.load_state_dict(model.state_dict())
    rgb = make_rgb(2, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(nchw(rgb=rgb)["log_probs"], model(rgb=rgb)["log_probs"], atol=1e-5, rtol=1e-5)
