"""Hand patches for the RGB-only student (`--hand_crop P`, cslr/models/hands.py): the windows cut the pixels around
the given centres, the locator's soft-argmax, the locator's loss and its masking, the student's outputs in
training and inference, a locator that learns from a few steps, checkpoints and the clear errors.

Run: `/work/venv/bin/pytest tests/test_hand_patches.py -q`
"""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO, clean_env, run_cmd
from cslr.models.hands import HandLocator, HandPatches, stride8_split
from cslr.trainer.kd import hand_centres, hand_locate_loss, make_kd_loss

STUDENT = str(REPO / "launch" / "student.py")


def test_windows_cut_the_pixels_around_each_centre():
    """A linear image (bilinear sampling is exact on it): a window centred on pixel boundary (cx, cy) is the
    frame's slice [cy - P/2, cy + P/2) x [cx - P/2, cx + P/2), left hand's window first."""
    S, P = 32, 8
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    frame = torch.stack([xs, ys, 3 * xs - 2 * ys])[None].repeat(2, 1, 1, 1)  # (2, 3, S, S)
    frame[1] += 100  # the second frame differs: each window comes from its own frame
    centres = torch.tensor([[[12, 20], [20, 9]], [[16, 16], [8, 24]]], dtype=torch.float32) / S  # (x, y) in [0, 1]
    got = HandPatches(P).windows(frame, centres)
    assert got.shape == (4, 3, P, P)
    for i, (n, h) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        cx, cy = (centres[n, h] * S).round().long().tolist()
        torch.testing.assert_close(got[i], frame[n, :, cy - P // 2: cy + P // 2, cx - P // 2: cx + P // 2])


def test_the_locator_takes_the_expected_position_of_each_heatmap():
    locator = HandLocator(4)
    heat = torch.full((1, 2, 8, 8), -1e4)
    heat[0, 0, 2, 5] = 0.0  # left hand: row 2, column 5 -> x = 5.5 / 8, y = 2.5 / 8
    heat[0, 1, 7, 0] = heat[0, 1, 7, 1] = 0.0  # right hand: half on each of two cells -> their mean
    locator.net = torch.nn.Identity()
    xy = locator(heat)
    torch.testing.assert_close(xy, torch.tensor([[[5.5 / 8, 2.5 / 8], [1.0 / 8, 7.5 / 8]]]))
    import torchvision
    for backbone, k in (("mobilenet_v3_small", 4), ("mobilenet_v3_large", 7)):
        features = getattr(torchvision.models, backbone)(weights=None).features
        split, channels = stride8_split(features)
        assert split == k and features[:split](torch.zeros(1, 3, 64, 64)).shape[1:] == (channels, 8, 8)


def test_the_locator_loss_is_the_l1_distance_to_the_landmarks_centre_in_patch_sides():
    torch.manual_seed(0)
    pose = torch.rand(1, 3, 543, 3)
    pose[0, 1, 501 + 7] = float("nan")  # frame 1: a left-hand landmark lost -> that hand does not count
    lengths = torch.tensor([2])  # frame 2 is padding
    centres, keep = hand_centres(pose, lengths)
    assert keep.tolist() == [[[True, True], [False, True], [False, False]]]
    torch.testing.assert_close(centres[0, 0, 1], pose[0, 0, 522:543, :2].mean(0))
    assert not centres.isnan().any()
    xy = centres.clone()
    assert hand_locate_loss(xy, pose, lengths, scale=4.0).item() == 0.0
    xy[0, 1, 0] += 0.5  # the hand that does not count
    xy[0, 2] += 0.5  # padding
    assert hand_locate_loss(xy, pose, lengths, scale=4.0).item() == 0.0
    xy[0, 0, 1] += torch.tensor([0.05, -0.1])  # |dx| + |dy| = 0.15 of the frame = 0.6 patch sides at scale 4
    assert hand_locate_loss(xy, pose, lengths, scale=4.0).item() == pytest.approx(0.6 / 3, rel=1e-5)


def _batch(tiny_data, vocab):
    from cslr.datasets.pipeline import DataConfig, build_loader

    return next(iter(build_loader(DataConfig(data=str(tiny_data), batch_size=4, num_workers=0, image_size=32,
                                             modalities=("rgb", "pose")), "train", vocab, train=False)))


def test_the_student_locates_the_hands_in_training_and_needs_no_landmarks_at_inference(tiny_data):
    """`hand_xy` and `hand_shape` in training only; the loss adds the locator's and the weighted shape loss to
    the plain one; a few optimizer steps on one batch bring the located centres towards the landmarks' (the
    locator's loss falls) and the shapes read from the patches towards theirs."""
    from cslr.datasets.vocab import Vocabulary
    from cslr.models.checkpoint import build_model
    from cslr.models.registry import ModelConfig

    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    batch = _batch(tiny_data, vocab)
    torch.manual_seed(0)
    student, meta = build_model(ModelConfig(arch="student_tiny", modality="rgb", hand_crop=8, dropout=0.0), len(vocab))
    assert meta["model_kwargs"]["hand_crop"] == 8
    plain, _ = build_model(ModelConfig(arch="student_tiny", modality="rgb"), len(vocab))
    assert student.frames.out_channels == plain.frames.out_channels + 2 * 64 + 4
    loss_fn = make_kd_loss(0.0, 2.0, hand_scale=32 / 8, hand_shape_weight=0.5)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    located, shapes = [], []
    for step in range(20):
        out = student.train()(batch["rgb"], lengths=batch["lengths"])
        assert out["hand_xy"].shape == batch["rgb"].shape[:2] + (2, 2)
        assert out["hand_shape"].shape == batch["rgb"].shape[:2] + (2, 42)
        loss, parts = loss_fn(out, batch)
        located.append(parts["hand"].item())
        shapes.append(parts["hand_shape"].item())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            plain, _ = make_kd_loss(0.0, 2.0)({k: v for k, v in out.items() if not k.startswith("hand")}, batch)
            assert loss.item() == pytest.approx(plain.item() + located[0] + 0.5 * shapes[0], rel=1e-5)
            assert parts["hand"].item() == pytest.approx(hand_locate_loss(out["hand_xy"], batch["pose"],
                                                                          batch["lengths"], 4.0).item())
            assert student.frames.hands.encoder[0][0].weight.grad.abs().sum() > 0
            assert student.frames.hands.shape.weight.grad.abs().sum() > 0
            assert student.frames.locator.net[0].weight.grad.abs().sum() > 0
        opt.step()
    assert located[-1] < 0.6 * located[0], located
    assert shapes[-1] < shapes[0], shapes
    out = student.eval()(batch["rgb"])
    assert "hand_xy" not in out and out["log_probs"].shape[-1] == len(vocab)
    with pytest.raises(ValueError, match="needs the landmarks"):
        loss_fn(student.train()(batch["rgb"], lengths=batch["lengths"]), {k: v for k, v in batch.items() if k != "pose"})
    from cslr.trainer.losses import plain_loss
    with pytest.raises(ValueError, match="launch/student.py"):
        plain_loss(0.5)(student.train()(batch["rgb"], lengths=batch["lengths"]), batch)


def test_a_pooled_backbone_reads_the_frames_at_half_size_and_the_patches_at_full_size():
    """`backbone_pool 2`: the backbone's first layer sees (S/2, S/2) frames, the locator the stride-8 map of the
    full frame (its features of stride 4 in the pooled one), the patches are cut from the full-size frame."""
    from cslr.models.student import FrameEncoder

    torch.manual_seed(0)
    S, P = 32, 8
    seen = {}  # (what, pool) -> the spatial size of its input

    def record(key):
        return lambda module, args, output: seen.__setitem__(key, tuple(args[0].shape[-2:]))

    for pool in (1, 2):
        enc = FrameEncoder("mobilenet_v3_small", 0.25, hand_crop=P, pool=pool).eval()
        enc.features[0].register_forward_hook(record(("backbone", pool)))
        enc.locator.register_forward_hook(record(("locator", pool)))
        windows, note = enc.hands.windows, record(("patches", pool))
        enc.hands.windows = lambda frames, centres, note=note, windows=windows: (
            note(None, (frames,), None), windows(frames, centres))[1]
        with torch.no_grad():
            feats, extra = enc(torch.randint(0, 255, (3, 3, S, S), dtype=torch.uint8))
        assert feats.shape == (3, enc.out_channels) and extra["hand_xy"].shape == (3, 2, 2)
    assert seen[("backbone", 1)] == (S, S) and seen[("backbone", 2)] == (S // 2, S // 2)
    assert seen[("locator", 1)] == seen[("locator", 2)] == (S // 8, S // 8)
    assert seen[("patches", 1)] == seen[("patches", 2)] == (S, S)
    with pytest.raises(ValueError, match="only with hand patches"):
        from cslr.models.registry import build_model
        build_model("student_tiny", 9, backbone_pool=2)


def test_the_student_trains_with_hand_patches_and_loads_back(tiny_data, tmp_path):
    from cslr.models.checkpoint import model_from_checkpoint

    out = tmp_path / "hands"
    proc = run_cmd([sys.executable, STUDENT, "--data", str(tiny_data), "--output_dir", str(out), "--report_to",
                    "none", "--arch", "student_tiny", "--modality", "rgb", "--hand_crop", "8", "--image_size", "32",
                    "--backbone_pool", "2", "--alpha", "0", "--epochs", "1", "--batch_size", "4", "--num_workers",
                    "0", "--beam_width", "2"], env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("hand patches: 8x8 windows around the hands located in each 32x32 frame, hand shapes at weight 1.00; "
            "the backbone reads the frames pooled by 2") in (out / "training.log").read_text()
    model, _, ck = model_from_checkpoint(out / "best_model.pth")
    assert ck["model_kwargs"]["hand_crop"] == 8 and model.frames.hands.patch == 8 and model.pose is None
    assert ck["model_kwargs"]["backbone_pool"] == 2 and model.frames.pool == 2
    with torch.no_grad():
        res = model(torch.randint(0, 255, (1, 12, 3, 32, 32), dtype=torch.uint8))
    assert set(res) == {"log_probs", "lengths", "aux", "features"}


@pytest.mark.parametrize("flags, message", [
    (["--arch", "teacher_tiny", "--hand_crop", "8"], "takes no hand patches"),
    (["--arch", "student_tiny", "--hand_crop", "32"], "--hand_crop must be in [0, --image_size 32)"),
    (["--arch", "student_tiny", "--backbone_pool", "2"], "--backbone_pool 2 needs hand patches"),
    (["--arch", "student_tiny", "--hand_crop", "8", "--backbone_pool", "3"], "divide --image_size 32, not 3"),
])
def test_hand_crop_flags_that_do_not_fit_are_clear_errors(tiny_data, tmp_path, flags, message):
    proc = run_cmd([sys.executable, STUDENT, "--data", str(tiny_data), "--output_dir", str(tmp_path / "o"),
                    "--report_to", "none", "--modality", "rgb", "--num_workers", "0", "--image_size", "32",
                    "--alpha", "0", "--resume", "", *flags], env=clean_env(), timeout=300)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_the_patch_shape_loss_is_robust_to_hands_seen_edge_on():
    """Huber at 1 hand size: the squared error below it, linear above, so an outlying target (a hand seen
    edge-on, tiny in the image plane) cannot dominate a batch; huber 0 is the plain squared error."""
    from cslr.trainer.kd import hand_shape_loss, hand_shape_targets

    torch.manual_seed(0)
    pose = torch.rand(1, 2, 543, 3)
    lengths = torch.tensor([2])
    target, keep = hand_shape_targets(pose, lengths)
    assert keep.all()
    pred = target.clone()
    pred[0, 0, 0, :21] += 0.5  # below the threshold: 21 values off by 0.5 -> squared error 0.25 each
    small = 21 * 0.25 / 42 / 4  # mean over the hand's 42 values, then over 4 hands
    assert hand_shape_loss(pred, pose, lengths, huber=1.0).item() == pytest.approx(small, rel=1e-5)
    assert hand_shape_loss(pred, pose, lengths).item() == pytest.approx(small, rel=1e-5)
    pred[0, 1, 1, 0] += 100.0  # one outlying value: squared 1e4, Huber 2 * (100 - 0.5) = 199
    assert hand_shape_loss(pred, pose, lengths).item() == pytest.approx(small + 1e4 / 42 / 4, rel=1e-4)
    assert hand_shape_loss(pred, pose, lengths, huber=1.0).item() == pytest.approx(small + 199 / 42 / 4, rel=1e-4)
