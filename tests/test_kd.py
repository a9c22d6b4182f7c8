"""Distillation tests: KL numerics (dense and top-K against hand-made cases and torch's kl_div), the frame-count
rule, masking, the T^2 / alpha weighting, online targets == offline batch keys, a real 2-process DDP KD run.

Run: `/work/venv/bin/pytest tests/test_kd.py -q`
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, accelerate_cmd, clean_env, free_port, run_cmd, save_untrained
from cslr.trainer.kd import (align_frames, distillation_loss, make_kd_loss, soft_target_kl,
                             soft_targets_from_log_probs)
from cslr.trainer.losses import ctc_loss

STUDENT = str(REPO / "launch" / "student.py")


def dense(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logp, torch.arange(logp.shape[-1]).expand_as(logp)


# ---------------------------------------------------------------------------------------------- numerics
def test_dense_kl_hand_made_case():
    """One frame, V = 3: KL(p || q) by hand, q the student's softmax at temperature T."""
    T = 2.0
    p = torch.tensor([0.7, 0.2, 0.1])
    student_logits = torch.tensor([1.0, 0.0, -1.0])
    q = torch.softmax(student_logits / T, -1)
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    s = F.log_softmax(student_logits, -1)[None, None]  # the model's output at T = 1
    kl = soft_target_kl(s, torch.tensor([1]), *dense(p.log()[None, None]), torch.tensor([1]), T)
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_topk_kl_hand_made_case():
    """K = 2 of V = 4: both distributions renormalised over the support {0, 2}, the rest ignored."""
    T = 1.5
    teacher = torch.tensor([0.5, 0.1, 0.3, 0.1])
    s_logits = torch.tensor([0.3, 2.0, 1.5, 0.1])
    q = torch.softmax(s_logits / T, -1)
    p_sup = [0.5 / 0.8, 0.3 / 0.8]
    q_sup = [q[0].item() / (q[0] + q[2]).item(), q[2].item() / (q[0] + q[2]).item()]
    expected = sum(a * math.log(a / b) for a, b in zip(p_sup, q_sup))
    logp = teacher.log()[[0, 2]][None, None]  # stored unnormalised over the support (as top-K of a softmax)
    idx = torch.tensor([0, 2])[None, None]
    kl = soft_target_kl(F.log_softmax(s_logits, -1)[None, None], torch.tensor([1]), logp, idx, torch.tensor([1]), T)
    assert expected > 0.05 and kl.item() == pytest.approx(expected, rel=1e-5)


def test_topk_with_all_labels_equals_dense_and_torch_kl_div():
    g = torch.Generator().manual_seed(0)
    B, Tf, V, T = 3, 6, 11, 3.0
    student = F.log_softmax(torch.randn(B, Tf, V, generator=g) * 2, -1)
    lengths = torch.tensor([6, 4, 1])
    teacher_logp = F.log_softmax(torch.randn(B, Tf, V, generator=g) * 2 / T, -1)
    kl_dense = soft_target_kl(student, lengths, *dense(teacher_logp), lengths, T)
    perm = torch.stack([torch.randperm(V, generator=g) for _ in range(B * Tf)]).view(B, Tf, V)  # any order of labels
    kl_topk = soft_target_kl(student, lengths, teacher_logp.gather(-1, perm), perm, lengths, T)
    torch.testing.assert_close(kl_topk, kl_dense, atol=1e-6, rtol=1e-6)
    ref = F.kl_div(F.log_softmax(student / T, -1), teacher_logp, log_target=True, reduction="none").sum(-1)  # (B, Tf)
    mask = torch.arange(Tf)[None] < lengths[:, None]
    torch.testing.assert_close(kl_dense, ref[mask].mean(), atol=1e-6, rtol=1e-6)
    # top-K through the contract's producer equals gathering by hand
    t = soft_targets_from_log_probs(torch.randn(B, Tf, V, generator=g), lengths, T, topk=4)
    assert t["soft_logp"].shape == t["soft_idx"].shape == (B, Tf, 4)
    assert (t["soft_logp"][..., :-1] >= t["soft_logp"][..., 1:]).all()


def test_padding_is_masked_and_gradient_reaches_only_the_student():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 6, generator=g, requires_grad=True)
    teacher = F.log_softmax(torch.randn(2, 5, 6, generator=g), -1)
    lengths = torch.tensor([5, 3])
    kl = soft_target_kl(F.log_softmax(logits, -1), lengths, *dense(teacher), lengths, 2.0)
    noisy = teacher.clone()
    noisy[1, 3:] = 0.0  # padding of the targets as the loader pads: zeros
    other = logits.detach().clone()
    other[1, 3:] = 100.0
    torch.testing.assert_close(soft_target_kl(F.log_softmax(other, -1), lengths, *dense(noisy), lengths, 2.0),
                               kl.detach())
    kl.backward()
    assert logits.grad[1, 3:].abs().max() == 0 and logits.grad[0].abs().max() > 0


def test_frame_count_rule():
    same = align_frames(torch.tensor([7, 3]), torch.tensor([7, 3]), 7)
    assert same[0].tolist() == list(range(7)) and same[1, :3].tolist() == [0, 1, 2]
    assert align_frames(torch.tensor([3]), torch.tensor([6]), 3).tolist() == [[1, 3, 5]]  # floor((j+.5)*2)
    assert align_frames(torch.tensor([6]), torch.tensor([3]), 6).tolist() == [[0, 0, 1, 1, 2, 2]]
    for ls in range(1, 30):  # brute force of floor((j + 0.5) * lt / ls), always inside the teacher's frames
        for lt in range(1, 30):
            got = align_frames(torch.tensor([ls]), torch.tensor([lt]), ls)[0].tolist()
            assert got == [min(int(math.floor((j + 0.5) * lt / ls)), lt - 1) for j in range(ls)]
            assert max(got) < lt


def test_loss_weights_ctc_and_t_squared_kl():
    g = torch.Generator().manual_seed(2)
    out = {"log_probs": F.log_softmax(torch.randn(2, 6, 5, generator=g), -1), "lengths": torch.tensor([6, 4])}
    batch = {"targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": torch.tensor([2, 1]),
             **soft_targets_from_log_probs(torch.randn(2, 8, 5, generator=g), torch.tensor([8, 5]), 3.0)}
    loss, parts = distillation_loss(out, batch, alpha=0.7, temperature=3.0)
    ctc = ctc_loss(out["log_probs"], out["lengths"], batch["targets"], batch["target_lengths"])
    kl = soft_target_kl(out["log_probs"], out["lengths"], batch["soft_logp"], batch["soft_idx"], batch["soft_lengths"], 3.0)
    torch.testing.assert_close(loss, 0.3 * ctc + 0.7 * 9.0 * kl)
    torch.testing.assert_close(parts["kd"], kl)
    assert distillation_loss(out, {k: batch[k] for k in ("targets", "target_lengths")}, 0.0, 3.0)[0] == ctc
    with pytest.raises(KeyError, match="soft targets"):
        distillation_loss(out, {k: batch[k] for k in ("targets", "target_lengths")}, 0.5, 3.0)


def test_aux_heads_get_their_own_ctc_and_kl():
    """A student's auxiliary stream heads add aux_weight x (their CTC) and aux_weight x (their KL to the same
    targets) to the two terms; alpha 0 is the teacher's loss, main CTC + aux_weight x each auxiliary CTC."""
    from cslr.trainer.losses import teacher_loss

    g = torch.Generator().manual_seed(3)
    lp = lambda: F.log_softmax(torch.randn(2, 6, 5, generator=g), -1)  # noqa: E731
    out = {"log_probs": lp(), "lengths": torch.tensor([6, 4]), "aux": {"rgb": lp(), "pose": lp()}}
    batch = {"targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": torch.tensor([2, 1]),
             **soft_targets_from_log_probs(torch.randn(2, 8, 5, generator=g), torch.tensor([8, 5]), 2.0, topk=3)}
    targets = [batch[k] for k in ("soft_logp", "soft_idx", "soft_lengths")]
    ctc = {n: ctc_loss(x, out["lengths"], batch["targets"], batch["target_lengths"])
           for n, x in [("main", out["log_probs"]), *out["aux"].items()]}
    kl = {n: soft_target_kl(x, out["lengths"], *targets, 2.0) for n, x in [("main", out["log_probs"]), *out["aux"].items()]}
    loss, parts = distillation_loss(out, batch, alpha=0.6, temperature=2.0, aux_weight=0.25)
    want = 0.4 * (ctc["main"] + 0.25 * (ctc["rgb"] + ctc["pose"])) + 0.6 * 4.0 * (kl["main"] + 0.25 * (kl["rgb"] + kl["pose"]))
    torch.testing.assert_close(loss, want)
    assert set(parts) == {"ctc", "ctc_rgb", "ctc_pose", "kd", "kd_rgb", "kd_pose"}
    torch.testing.assert_close(parts["kd_pose"], kl["pose"])
    no_kd, _ = distillation_loss(out, batch, alpha=0.0, temperature=2.0, aux_weight=0.25)
    torch.testing.assert_close(no_kd, teacher_loss(out, batch, 0.25)[0])
    torch.testing.assert_close(distillation_loss(out, batch, 0.6, 2.0)[0], 0.4 * ctc["main"] + 0.6 * 4.0 * kl["main"])


# ---------------------------------------------------------------------------------------------- online == offline
@pytest.fixture(scope="module")
def teacher_ckpt(tiny_data, tmp_path_factory) -> Path:
    """An untrained teacher_tiny (rgb+pose) written as a training run's best_model.pth."""
    return save_untrained(tiny_data, tmp_path_factory.mktemp("teacher"))


def test_online_targets_equal_offline_batch_keys(tiny_data, teacher_ckpt):
    """The loss with the teacher run alongside equals the loss on contract batch keys built from its output
    (dense, and top-K with K = V; float16 storage within its precision)."""
    from cslr.datasets.pipeline import DataConfig, build_loader
    from cslr.datasets.vocab import Vocabulary
    from cslr.models.registry import build_model
    from cslr.trainer.kd import load_frozen_teacher

    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    teacher = load_frozen_teacher(teacher_ckpt, vocab, "cpu")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    cfg = DataConfig(data=str(tiny_data), batch_size=3, num_workers=0, image_size=32, modalities=("rgb", "pose"))
    batch = next(iter(build_loader(cfg, "train", vocab, train=True)))
    student = build_model("student_tiny", len(vocab))
    out = student(batch["rgb"], lengths=batch["lengths"])
    T = 3.0
    online, _ = make_kd_loss(0.7, T, teacher)(out, batch)

    with torch.no_grad():
        t_out = teacher(batch["rgb"], batch["pose"], batch["lengths"])
    logp = F.log_softmax(t_out["log_probs"] / T, -1)  # what the sidecar holds per sample, (T', V)
    for topk, dtype, tol in ((0, torch.float32, 1e-6), (len(vocab), torch.float16, 2e-3)):
        samples = []
        for i, n in enumerate(t_out["lengths"].tolist()):
            lp, idx = logp[i, :n], torch.arange(len(vocab)).expand(n, -1)
            if topk:
                lp, idx = lp.topk(topk, -1)
            samples.append((lp.to(dtype).float(), idx))
        Tmax = max(s[0].shape[0] for s in samples)
        K = samples[0][0].shape[1]
        soft_logp, soft_idx = torch.zeros(len(samples), Tmax, K), torch.zeros(len(samples), Tmax, K, dtype=torch.long)
        for i, (lp, idx) in enumerate(samples):
            soft_logp[i, : len(lp)], soft_idx[i, : len(lp)] = lp, idx
        offline_batch = {**batch, "soft_logp": soft_logp, "soft_idx": soft_idx, "soft_lengths": t_out["lengths"]}
        offline, _ = make_kd_loss(0.7, T)(out, offline_batch)
        assert offline.item() == pytest.approx(online.item(), rel=tol, abs=tol), (topk, dtype)


def test_teacher_with_another_vocabulary_is_refused(teacher_ckpt):
    from cslr.datasets.vocab import Vocabulary
    from cslr.trainer.kd import load_frozen_teacher

    with pytest.raises(ValueError, match="vocabulary"):
        load_frozen_teacher(teacher_ckpt, Vocabulary(["A", "B"]), "cpu")


# ---------------------------------------------------------------------------------------------- end to end
def test_kd_ddp_two_processes_online(tiny_data, teacher_ckpt, tmp_path):
    out = tmp_path / "kd"
    flags = ["--data", str(tiny_data), "--output_dir", str(out), "--arch", "student_tiny", "--modality", "rgb",
             "--image_size", "32", "--batch_size", "4", "--num_workers", "0", "--epochs", "3",
             "--learning_rate", "0.003", "--warmup_epochs", "0.5", "--report_to", "none", "--beam_width", "2",
             "--seed", "1", "--resume", "", "--teacher_checkpoint", str(teacher_ckpt), "--alpha", "0.5",
             "--temperature", "2.0", "--hint_weight", "0.5", "--hint_dim", "16"]  # + hints: every parameter
    proc = run_cmd(accelerate_cmd("--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                                  "--main_process_port", str(free_port()), "--mixed_precision", "no",
                                  "--dynamo_backend", "no", STUDENT, *flags),
                   env=clean_env(ACCELERATE_USE_CPU="true"), timeout=900)
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["test_wer"] is not None
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0], losses
    for name in ("config.yaml", "training.log", "best_model.pth", "training_curves.png", "test_hyp.ctm"):
        assert (out / name).is_file(), name
    ck = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "student_tiny" and ck["config"]["kd"]["alpha"] == 0.5
    log = (out / "training.log").read_text()
    assert "KD (online)" in log and "hints: student rgb features -> the teacher's pose stream (16 wide, sequence" in log
    assert ck["model_kwargs"]["hint_dim"] == 16 and "hint.weight" in ck["model"]


@pytest.mark.slow
def test_kd_deepspeed_zero2_two_processes_online(tiny_data, teacher_ckpt, tmp_path):
    """The student under DeepSpeed ZeRO-2 (2 CPU ranks) with the frozen teacher outside the engine (DESIGN.md)."""
    out = tmp_path / "kd-ds"
    flags = ["--data", str(tiny_data), "--output_dir", str(out), "--arch", "student_tiny", "--modality", "rgb",
             "--image_size", "32", "--batch_size", "4", "--num_workers", "0", "--epochs", "2",
             "--learning_rate", "0.003", "--warmup_epochs", "0.5", "--report_to", "none", "--beam_width", "0",
             "--seed", "1", "--resume", "", "--teacher_checkpoint", str(teacher_ckpt), "--alpha", "0.5",
             "--temperature", "2.0"]
    proc = run_cmd(accelerate_cmd("--config_file", str(REPO / "configs/accelerate/deepspeed_zero2.yaml"),
                                  "--num_processes", "2", "--main_process_port", str(free_port()), STUDENT, *flags),
                   env=clean_env(DS_ACCELERATOR="cpu", ACCELERATE_USE_CPU="true"), timeout=1200)
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["test_wer"] is not None
    losses = [h["train_loss"] for h in res["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    ck = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "student_tiny" and all(v.numel() > 0 for v in ck["model"].values())  # gathered
    # the teacher stayed out of the engine: the saved model holds the student's weights only
    assert not any(k.startswith("teacher") for k in ck["model"])
    assert "KD (online)" in (out / "training.log").read_text()


def test_missing_teacher_is_a_clear_error(tiny_data, tmp_path):
    proc = run_cmd([sys.executable, STUDENT, "--data", str(tiny_data), "--output_dir", str(tmp_path / "o"),
                    "--report_to", "none", "--arch", "student_tiny", "--num_workers", "0", "--resume", "",
                    "--teacher_checkpoint", str(tmp_path / "nope.pth")], timeout=300)
    assert proc.returncode == 2 and "nope.pth not found" in proc.stderr, proc.stderr
