"""The RGB-only student's recipe (configs/student_rgb.yaml): feature hints (FitNets): the hint loss's numerics and
masking, the regressor only in training, checkpoints that rebuild it and the backbone width, the recipe's
checks, and training steps whose hint loss falls.

Run: `/work/venv/bin/pytest tests/test_student_rgb.py -q`
"""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO, clean_env, run_cmd, save_untrained
from cslr.trainer.kd import (hand_shape_targets, hint_loss, make_kd_loss, teacher_frame_features,
                             teacher_stream_features)

STUDENT = str(REPO / "launch" / "student.py")


def test_hint_loss_is_the_mse_to_the_layer_normalised_target_over_valid_frames():
    torch.manual_seed(0)
    target = torch.randn(2, 5, 4) * 7 + 3  # any scale: the loss normalises it per frame
    lengths = torch.tensor([5, 3])
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert hint_loss(normed, target, lengths).item() == pytest.approx(0.0, abs=1e-6)
    hint = normed.clone()
    hint[0, 1] += 2.0  # one valid frame off by 2 in all 4 dims: squared error 4 per dim
    hint[1, 4] += 100.0  # a padded frame: ignored
    assert hint_loss(hint, target, lengths).item() == pytest.approx(4.0 / 8, rel=1e-5)  # 8 valid frames
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[0, 1] = False  # the off frame left out: 7 frames, all exact
    assert hint_loss(hint, target, lengths, keep).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="hint_dim"):
        hint_loss(hint[..., :3], target, lengths)


def test_frame_hints_read_the_landmark_embedding_where_a_hand_is_seen(tiny_data, tmp_path):
    """hint_level "frames": the regressor reads each frame's backbone features, and the targets are the teacher's
    per-frame landmark embedding, kept only on valid frames where some hand landmark was detected."""
    from cslr.models.checkpoint import build_model
    from cslr.models.registry import ModelConfig
    from cslr.datasets.vocab import Vocabulary
    from cslr.trainer.kd import load_frozen_teacher

    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    teacher = load_frozen_teacher(save_untrained(tiny_data, tmp_path, randomise=True), vocab, "cpu")
    torch.manual_seed(0)
    pose = torch.randn(2, 6, 543, 3)
    pose[0, 2, 501:] = float("nan")  # no hand in frame 2 of video 0 (landmarks 501-521 left, 522-542 right hand)
    pose[1, 1, 501:522] = float("nan")  # one hand lost: still seen
    pose[1, 3, 530] = float("nan")  # one landmark lost: still seen
    batch = {"pose": pose, "lengths": torch.tensor([6, 4])}
    feats, seen = teacher_frame_features(teacher, batch)
    width = teacher.encoders["pose"].out_channels
    assert feats.shape == (2, 6, width)
    assert seen.tolist() == [[True, True, False, True, True, True], [True, True, True, True, False, False]]
    student, _ = build_model(ModelConfig(arch="student_tiny", modality="rgb", hint_dim=width, hint_level="frames"),
                             len(vocab))
    out = student.train()(torch.randint(0, 255, (2, 6, 3, 32, 32), dtype=torch.uint8), lengths=batch["lengths"])
    assert out["hint_frames"].shape == (2, 6, width) and "hint" not in out
    loss, parts = make_kd_loss(0.0, 2.0, hint_teacher=teacher, hint_weight=1.0)(out, {**batch, "targets": torch.tensor(
        [[1, 2], [2, 1]]), "target_lengths": torch.tensor([2, 2])})
    assert parts["hint"].item() == pytest.approx(hint_loss(out["hint_frames"], feats, batch["lengths"], seen).item())


def test_the_regressor_runs_in_training_only_and_survives_a_checkpoint(tiny_data, tmp_path):
    from cslr.models.checkpoint import build_model, model_from_checkpoint
    from cslr.models.registry import ModelConfig

    model, meta = build_model(ModelConfig(arch="student_tiny", modality="rgb", hint_dim=12, width_mult=0.5), 10)
    assert model.cfg.width_mult == 0.5 and meta["model_kwargs"]["width_mult"] == 0.5
    narrow, _ = build_model(ModelConfig(arch="student_tiny", modality="rgb"), 10)  # the preset's 0.25
    assert model.frames.out_channels > narrow.frames.out_channels
    rgb = torch.randint(0, 255, (2, 9, 3, 32, 32), dtype=torch.uint8)
    out = model.train()(rgb, lengths=torch.tensor([9, 6]))
    assert out["hint"].shape == (2, 3, 12)
    assert "hint" not in model.eval()(rgb)
    path = save_untrained(tiny_data, tmp_path, arch="student_tiny", modality="rgb")
    ck = torch.load(path, weights_only=True)
    ck.update(model=model.state_dict(), **meta)
    torch.save(ck, path)
    again, _, _ = model_from_checkpoint(path)
    assert again.cfg.hint_dim == 12 and again.cfg.width_mult == 0.5
    torch.testing.assert_close(again.hint.weight, model.hint.weight)
    with pytest.raises(ValueError, match="no hint regressor"):
        build_model(ModelConfig(arch="teacher_tiny", hint_dim=12), 10)


def test_the_hint_teaches_the_rgb_student_the_teachers_pose_features(tiny_data, tmp_path):
    """A few optimizer steps on one batch lower the hint loss, the gradient reaches the student's backbone and
    never the frozen teacher, and weight 0 is the plain KD loss."""
    from cslr.datasets.pipeline import DataConfig, build_loader
    from cslr.datasets.vocab import Vocabulary
    from cslr.models.checkpoint import build_model
    from cslr.models.registry import ModelConfig
    from cslr.trainer.kd import load_frozen_teacher

    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    teacher = load_frozen_teacher(save_untrained(tiny_data, tmp_path, randomise=True), vocab, "cpu")
    width = teacher.encoders["pose"].out_channels
    batch = next(iter(build_loader(DataConfig(data=str(tiny_data), batch_size=4, num_workers=0, image_size=32,
                                              modalities=("rgb", "pose")), "train", vocab, train=False)))
    torch.manual_seed(0)
    student, _ = build_model(ModelConfig(arch="student_tiny", modality="rgb", hint_dim=width, dropout=0.0), len(vocab))
    student.train()
    target = teacher_stream_features(teacher, batch)
    assert target.shape[-1] == width and not target.requires_grad
    loss_fn = make_kd_loss(0.0, 2.0, hint_teacher=teacher, hint_weight=3.0)
    plain_fn = make_kd_loss(0.0, 2.0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    hints = []
    for step in range(15):
        out = student(batch["rgb"], lengths=batch["lengths"])
        loss, parts = loss_fn(out, batch)
        plain, _ = plain_fn(out, batch)
        assert loss.item() == pytest.approx(plain.item() + 3.0 * parts["hint"].item(), rel=1e-5)
        hints.append(parts["hint"].item())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert student.frames.features[0][0].weight.grad.abs().sum() > 0
            assert all(p.grad is None for p in teacher.parameters())
        opt.step()
    assert hints[-1] < 0.7 * hints[0], hints
    with pytest.raises(ValueError, match="hint regressor"):
        plain_student, _ = build_model(ModelConfig(arch="student_tiny", modality="rgb"), len(vocab))
        loss_fn(plain_student.train()(batch["rgb"], lengths=batch["lengths"]), batch)


@pytest.mark.parametrize("flags, message", [
    (["--hint_weight", "1", "--hint_dim", "5"], "--hint_dim 16"),
    (["--hint_weight", "1"], "--hint_dim 16"),
    (["--hint_dim", "16"], "without --hint_weight"),
    (["--image_size", "48"], "trained on 32x32 crops and the student reads 48x48"),  # online targets: refused
    (["--hint_weight", "1", "--hint_level", "hands", "--hint_dim", "16"], "hint_level 'hands' regresses 84"),
    (["--hint_weight", "1", "--hint_level", "hands"], "--hint_level hands needs --hint_dim 84"),
])
def test_hint_flags_that_do_not_fit_the_teacher_are_clear_errors(tiny_data, tmp_path, flags, message):
    teacher = save_untrained(tiny_data, tmp_path)
    proc = run_cmd([sys.executable, STUDENT, "--data", str(tiny_data), "--output_dir", str(tmp_path / "o"),
                    "--report_to", "none", "--arch", "student_tiny", "--modality", "rgb", "--num_workers", "0",
                    "--resume", "", "--teacher_checkpoint", str(teacher), *flags], env=clean_env(), timeout=300)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_a_teacher_without_pose_cannot_give_hints(tiny_data, tmp_path):
    teacher = save_untrained(tiny_data, tmp_path, modality="rgb")
    proc = run_cmd([sys.executable, STUDENT, "--data", str(tiny_data), "--output_dir", str(tmp_path / "o"),
                    "--report_to", "none", "--arch", "student_tiny", "--modality", "rgb", "--num_workers", "0",
                    "--resume", "", "--teacher_checkpoint", str(teacher), "--hint_weight", "1", "--hint_dim", "16"],
                   env=clean_env(), timeout=300)
    assert proc.returncode == 2 and "no pose stream" in proc.stderr, proc.stderr[-2000:]


def test_the_recipe_fits_the_default_teacher_and_corpus():
    """configs/student_rgb.yaml: RGB only, hints as wide as teacher_small's pose stream, the built-in corpus's
    full frames, offline targets (an online teacher would see crops it was not trained on)."""
    from cslr.datasets.synthetic.presets import PRESETS
    from cslr.models.registry import build_model
    from cslr.trainer.config import build_arg_parser, resolve

    cfg = resolve(build_arg_parser("", str(REPO / "configs" / "student_rgb.yaml")).parse_args([]))
    assert cfg.model.modality == "rgb" and cfg.model.hint_level == "frames" and cfg.kd.hint_weight > 0
    assert cfg.model.hint_dim == build_model("teacher_small", 10).encoders["pose"].out_channels
    assert cfg.data.image_size == PRESETS[cfg.run.synthetic_preset].frame_size[0] and cfg.data.soft_targets
    assert 0 < cfg.model.hand_crop < cfg.data.image_size and cfg.kd.hand_shape_weight > 0
    assert cfg.model.backbone_pool == 2  # the backbone at 32x32, the teacher's own crop size; the patches at 64x64


def test_the_recipe_trains_end_to_end_with_offline_targets_and_frame_hints(tiny_data, tmp_path):
    """The recipe's flags on the tiny corpus: sidecars written by launch/soft_targets.py, then
    launch/student.py --config configs/student_rgb.yaml; the student loads back with its regressor and needs no
    landmarks at inference."""
    from cslr.models.checkpoint import model_from_checkpoint

    teacher = save_untrained(tiny_data, tmp_path, randomise=True)
    soft = tmp_path / "soft"
    proc = run_cmd([sys.executable, str(REPO / "launch" / "soft_targets.py"), "--checkpoint", str(teacher),
                    "--data", str(tiny_data), "--out", str(soft), "--topk", "8", "--dtype", "float16",
                    "--temperature", "3", "--batch_size", "4"], env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "rgb"
    proc = run_cmd([sys.executable, STUDENT, "--config", str(REPO / "configs" / "student_rgb.yaml"),
                    "--data", str(tiny_data), "--soft_targets", str(soft), "--teacher_checkpoint", str(teacher),
                    "--output_dir", str(out), "--arch", "student_tiny", "--hint_dim", "16", "--image_size", "32",
                    "--epochs", "2", "--batch_size", "4", "--num_workers", "0", "--report_to", "none",
                    "--beam_width", "2"], env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "training.log").read_text()
    assert "KD (offline)" in log and "pose stream (16 wide, frames level), weight 2.00" in log
    model, _, ck = model_from_checkpoint(out / "best_model.pth")
    assert ck["model_kwargs"]["hint_level"] == "frames" and model.cfg.modality == "rgb" and model.pose is None
    assert ck["model_kwargs"]["backbone_pool"] == 2 and model.frames.hands is not None
    with torch.no_grad():
        res = model(torch.randint(0, 255, (1, 12, 3, 32, 32), dtype=torch.uint8))
    assert set(res) == {"log_probs", "lengths", "aux", "features"}


def test_hand_shape_targets_are_wrist_relative_in_hand_sizes_where_the_hand_is_seen():
    torch.manual_seed(0)
    pose = torch.rand(1, 3, 543, 3)
    pose[0, 1, 501 + 4] = float("nan")  # frame 1: one left-hand landmark lost -> that hand does not count
    target, keep = hand_shape_targets(pose, torch.tensor([2]))  # frame 2 is padding
    assert target.shape == (1, 3, 2, 42)
    assert keep.tolist() == [[[True, True], [False, True], [False, False]]]
    right = pose[0, 0, 522:543]
    size = (right[9, :2] - right[0, :2]).norm()
    torch.testing.assert_close(target[0, 0, 1].view(21, 2), (right[:, :2] - right[0, :2]) / size)
    assert not target.isnan().any() and (target[0, 1, 0] == 0).all()
    # the loss: a perfect prediction costs 0, and a wrong hand that does not count costs nothing
    from cslr.models.student import HAND_SHAPE_DIM
    from cslr.trainer.kd import student_hint_loss

    pred = target.flatten(2).clone()
    batch = {"pose": pose, "lengths": torch.tensor([2])}
    assert student_hint_loss({"hint_hands": pred}, batch, None).item() == 0.0
    pred[0, 1, :42] += 5.0  # the lost left hand of frame 1
    assert student_hint_loss({"hint_hands": pred}, batch, None).item() == 0.0
    pred[0, 0, 42:] += 1.0  # frame 0's right hand: error 1 per value, 1 of 3 counted hands
    assert student_hint_loss({"hint_hands": pred}, batch, None).item() == pytest.approx(1 / 3)
    assert pred.shape[-1] == HAND_SHAPE_DIM
