"""The teacher trainer end to end: real `accelerate launch` (1 process, 2-rank DDP over gloo, DeepSpeed ZeRO-2 and
ZeRO-3 on CPU), resume equals an uninterrupted run, outputs read back (TensorBoard events, W&B offline run file), bf16
autocast, non-finite losses skipped, clear errors on bad flags and missing data."""

from __future__ import annotations

import json
import time
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, accelerate_cmd, check_ok, clean_env, free_port, run_cmd

TEACHER = str(REPO / "launch" / "teacher.py")


def tiny_flags(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--output_dir", str(out), "--arch", "teacher_tiny", "--image_size", "32",
        "--batch_size", "4", "--num_workers", "0", "--epochs", "3", "--learning_rate", "0.003",
        "--warmup_epochs", "0.5", "--report_to", "none", "--beam_width", "2", "--seed", "1", *extra,
    ]


def final_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    from cslr.trainer.checkpoint import list_checkpoints

    last = list_checkpoints(out / "checkpoints")[-1]
    return load_file(str(last / "model.safetensors"))


# ---------------------------------------------------------------------------------------------- config
def test_seed_command_line_is_accepted():
    from cslr.trainer.config import build_arg_parser, resolve

    line = ("--batch_size 8 --learning_rate 0.0003 --dropout 0.3 --epochs 150 --warmup_epochs 5 --optimizer adamw "
            "--weight_decay 0.0001 --accumulation_steps 2 --use_amp --output_dir /tmp/x --num_workers 4").split()
    cfg = resolve(build_arg_parser("t", str(REPO / "configs" / "teacher.yaml")).parse_args(line))
    assert (cfg.data.batch_size, cfg.optim.learning_rate, cfg.model.dropout, cfg.optim.epochs) == (8, 3e-4, 0.3, 150)
    assert (cfg.optim.warmup_epochs, cfg.optim.optimizer, cfg.optim.weight_decay) == (5, "adamw", 1e-4)
    assert (cfg.optim.accumulation_steps, cfg.run.use_amp, cfg.run.output_dir, cfg.data.num_workers) == (2, True, "/tmp/x", 4)


def test_yaml_unknown_key_is_named(tmp_path):
    from cslr.trainer.config import TrainConfig, apply_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learnin_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key optim.learnin_rate"):
        apply_yaml(TrainConfig(), bad)


@pytest.mark.parametrize("args, needle", [
    (["--optimizer", "lamb"], "--optimizer must be adamw, adam or sgd"),
    (["--batch_size", "eight"], "invalid int value"),
    (["--no_such_flag", "1"], "unrecognized arguments"),
])
def test_bad_flags_exit_nonzero_with_message(args, needle):
    proc = run_cmd([sys.executable, TEACHER, *args], timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_missing_data_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    proc = run_cmd([sys.executable, TEACHER, "--data", str(missing), "--output_dir", str(tmp_path / "o"),
                    "--report_to", "none"], timeout=120)
    assert proc.returncode != 0
    assert f"data folder {missing} does not exist" in proc.stderr, proc.stderr


def test_schedule_warmup_then_cosine_and_no_decay_on_norms():
    from cslr.trainer.config import OptimConfig
    from cslr.trainer.optim import build_optimizer, build_scheduler

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = OptimConfig(learning_rate=1.0, epochs=10, warmup_epochs=2, min_lr_ratio=0.0)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert [p.ndim for p in decay["params"]] == [2] and decay["weight_decay"] == cfg.weight_decay
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # linear warmup over 2 epochs
    assert lrs[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine decay
    assert lrs[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert lrs[-1] < 0.01


def cpu_share(local_processes: int) -> int:
    """The compute threads each of `local_processes` CPU processes should get: this machine's usable CPUs / them."""
    import os

    return max(1, len(os.sched_getaffinity(0)) // local_processes)


def test_cpu_threads_follow_the_local_processes_or_cslr_cpu_threads(monkeypatch):
    from cslr.trainer.runtime import set_cpu_threads

    if torch.cuda.is_available():
        pytest.skip("CPU-only machines")
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("CSLR_CPU_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_cpu_threads() == cpu_share(2) == torch.get_num_threads()
        monkeypatch.setenv("CSLR_CPU_THREADS", "3")
        assert set_cpu_threads() == 3 == torch.get_num_threads()
        monkeypatch.setenv("CSLR_CPU_THREADS", "many")
        with pytest.raises(ValueError, match="CSLR_CPU_THREADS='many'"):
            set_cpu_threads()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- one process
@pytest.fixture(scope="module")
def single_run(tiny_data, tmp_path_factory):
    """One real `accelerate launch` run with both trackers (W&B offline), shared by the output checks."""
    out = tmp_path_factory.mktemp("run") / "single"
    flags = tiny_flags(tiny_data, out, "--report_to", "all", "--run_name", "tiny")
    proc = run_cmd(accelerate_cmd("--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                                  "--dynamo_backend", "no", TEACHER, *flags), timeout=900)
    check_ok(proc)
    return out, proc


def test_single_process_outputs(single_run):
    out, proc = single_run
    for name in ("config.yaml", "training.log", "best_model.pth", "results.json", "training_curves.png", "test_hyp.ctm"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    for key in ("best_epoch", "best_dev_wer", "test_wer", "test_sub", "test_del", "test_ins", "epochs_run",
                "wall_time_s", "num_parameters", "samples_per_s"):
        assert res[key] is not None, key
    assert res["epochs_run"] == 3 and res["world_size"] == 1
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0], losses  # it learns
    log = (out / "training.log").read_text()
    assert "Epoch 1 | Val WER:" in log and "Epoch 3 | Val WER:" in log
    if not torch.cuda.is_available():  # the trainer sets its threads (the tests' environment: CSLR_CPU_THREADS=1)
        assert f"on cpu ({clean_env()['CSLR_CPU_THREADS']} threads per process)" in log
    # best_model.pth: plain torch, weights_only, with config and vocab
    ck = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    assert ck["model_name"] == "teacher_tiny" and ck["vocab"] and ck["config"]["data"]["batch_size"] == 4
    assert ck["epoch"] == res["best_epoch"] and ck["dev_wer"] == pytest.approx(res["best_dev_wer"])
    # checkpoints: complete folders only, the last K kept
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(ckpts) == 2 and all(n.startswith("ckpt-e") for n in ckpts), ckpts


def test_tensorboard_events_hold_the_metrics(single_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = single_run
    runs = [p.parent for p in (out / "tensorboard").rglob("events.out.tfevents.*")]
    assert runs
    tags, dev = set(), []
    for r in runs:
        ea = EventAccumulator(str(r))
        ea.Reload()
        tags |= set(ea.Tags()["scalars"])
        if "epoch/dev_wer" in ea.Tags()["scalars"]:
            dev = [e.value for e in ea.Scalars("epoch/dev_wer")]
    assert {"train/loss", "train/lr", "epoch/train_loss", "epoch/dev_wer", "test/wer"} <= tags, tags
    res = json.loads((out / "results.json").read_text())
    assert dev == pytest.approx([h["dev_wer"] for h in res["history"]])


def test_wandb_offline_run_holds_the_metrics(single_run):
    from wandb_reader import history, run_ids

    out, proc = single_run
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    rows = history(files[0])
    res = json.loads((out / "results.json").read_text())
    dev = [r["epoch/dev_wer"] for r in rows if "epoch/dev_wer" in r]
    assert dev == pytest.approx([h["dev_wer"] for h in res["history"]])
    assert any("train/loss" in r for r in rows) and any(r.get("test/wer") == pytest.approx(res["test_wer"]) for r in rows)
    assert run_ids(files[0]) == {(out / "wandb_run_id.txt").read_text().strip()}


# ---------------------------------------------------------------------------------------------- resume
def test_fresh_run_into_a_folder_with_checkpoints_is_refused(single_run, tmp_path):
    out, _ = single_run
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    data = yaml.safe_load((out / "config.yaml").read_text())["data"]["data"]
    proc = run_cmd([sys.executable, TEACHER, *tiny_flags(Path(data), out, "--resume", "")], timeout=300)
    assert proc.returncode == 2 and "already holds checkpoints" in proc.stderr and "--resume auto" in proc.stderr, proc.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_resume_after_interruption_gives_the_same_weights(tiny_data, tmp_path):
    """Stop mid-epoch (--max_steps), resume with --resume auto: final weights equal an uninterrupted run's."""
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--epochs", "2", "--accumulation_steps", "2", "--dropout", "0.2"]
    check_ok(run_cmd([sys.executable, TEACHER, *tiny_flags(tiny_data, full, *common)]))
    check_ok(run_cmd([sys.executable, TEACHER, *tiny_flags(tiny_data, part, *common, "--max_steps", "3")]))
    state = json.loads(next((part / "checkpoints").glob("*/trainer_state.json")).read_text())
    assert state["global_step"] == 3 and state["batches_done"] == 6 and state["epoch"] == 0  # mid-epoch
    check_ok(run_cmd([sys.executable, TEACHER, *tiny_flags(tiny_data, part, *common, "--resume", "auto")]))
    a, b = final_weights(full), final_weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # one record per epoch, and the interrupted epoch's mean loss covers the batches before the stop too
    hist = [json.loads((d / "results.json").read_text())["history"] for d in (full, part)]
    assert [h["epoch"] for h in hist[1]] == [1, 2]
    assert [h["train_loss"] for h in hist[1]] == pytest.approx([h["train_loss"] for h in hist[0]], rel=1e-9)


# ---------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
def test_ddp_two_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    proc = run_cmd(accelerate_cmd("--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                                  "--main_process_port", str(free_port()), "--mixed_precision", "no",
                                  "--dynamo_backend", "no", TEACHER, *tiny_flags(tiny_data, out)),
                   env=clean_env(ACCELERATE_USE_CPU="true"), timeout=900)
    check_ok(proc)
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2
    assert "on cpu (1 threads per process)" in (out / "training.log").read_text()
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0], losses
    assert (out / "best_model.pth").is_file() and len(list((out / "checkpoints").iterdir())) == 2


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_processes(tiny_data, tmp_path, stage):
    out = tmp_path / "ds"
    proc = run_cmd(accelerate_cmd("--config_file", str(REPO / f"configs/accelerate/deepspeed_{stage}.yaml"),
                                  "--num_processes", "2", "--main_process_port", str(free_port()),
                                  TEACHER, *tiny_flags(tiny_data, out)),
                   env=clean_env(DS_ACCELERATOR="cpu", ACCELERATE_USE_CPU="true"), timeout=1200)
    check_ok(proc)
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2
    assert "on cpu (1 threads per process)" in (out / "training.log").read_text()
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0], losses
    ck = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    assert ck["model"] and all(v.numel() > 0 for v in ck["model"].values())  # gathered, not ZeRO shards


# ---------------------------------------------------------------------------------------------- in process
def _in_process_trainer(tiny_data, out, loss_fn=None, **run_overrides):
    from accelerate.state import AcceleratorState, GradientState

    from cslr.datasets.vocab import Vocabulary
    from cslr.trainer.config import TrainConfig
    from cslr.models.checkpoint import build_model
    from cslr.recipes.train import accelerator_for
    from cslr.trainer.trainer import Trainer

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = TrainConfig()
    cfg.data.data, cfg.data.batch_size, cfg.data.num_workers, cfg.data.image_size = str(tiny_data), 4, 0, 32
    cfg.model.arch, cfg.optim.epochs = "teacher_tiny", 1
    cfg.run.output_dir, cfg.run.report_to = str(out), "none"
    cfg.data.modalities = tuple(cfg.model.modality.split("+"))
    cfg.optim.accumulation_steps = run_overrides.pop("accumulation_steps", 1)
    for k, v in run_overrides.items():
        setattr(cfg.run, k, v)
    acc = accelerator_for(cfg)
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    model, meta = build_model(cfg.model, len(vocab))
    return Trainer(cfg, acc, model, vocab, "phoenix2014", meta, loss_fn=loss_fn)


def test_resume_warns_when_the_global_batch_changes(tiny_data, tmp_path, caplog):
    """A run requeued with another geometry (here accumulation 1 -> 2; fewer GPUs likewise) is told so in the log."""
    import logging

    from cslr.trainer import checkpoint as ckpt

    out = tmp_path / "o"
    first = _in_process_trainer(tiny_data, out, max_steps=2)
    first.train()
    (saved,) = ckpt.list_checkpoints(first.ckpt_dir)
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["batch"] == {"per_rank": 4, "ranks": 1, "accumulation": 1, "global": 4}
    with caplog.at_level(logging.WARNING, logger="cslr"):
        _in_process_trainer(tiny_data, out, max_steps=4).load(saved)
    assert not [r for r in caplog.records if "global batch" in r.getMessage()]  # same geometry: silent
    with caplog.at_level(logging.WARNING, logger="cslr"):
        _in_process_trainer(tiny_data, out, max_steps=4, accumulation_steps=2).load(saved)
    (warning,) = [r.getMessage() for r in caplog.records if "global batch" in r.getMessage()]
    assert "4 -> 8" in warning and "4 x 1 x 1 -> 4 x 1 x 2" in warning and "learning rate" in warning


def test_nonfinite_loss_is_skipped_and_counted(tiny_data, tmp_path):
    from cslr.trainer.losses import teacher_loss

    calls = {"n": 0}

    def flaky(out, batch):
        calls["n"] += 1
        loss, parts = teacher_loss(out, batch, 0.5)
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), parts

    tr = _in_process_trainer(tiny_data, tmp_path / "o", loss_fn=flaky, max_steps=4)
    before = []  # the full state (weights and BatchNorm statistics) before each forward
    tr.model.register_forward_pre_hook(
        lambda m, *_: before.append({k: v.detach().clone() for k, v in m.state_dict().items()}))
    tr.train()
    assert tr.state.nonfinite_total == 2 and tr.state.global_step == 4
    # the NaN batches 2 and 3 left no trace: the state before forwards 2, 3 and 4 is the same ...
    for later in (before[2], before[3]):
        assert all(torch.equal(before[1][k], later[k]) for k in later)
    # ... while the finite batch 1 did change it
    assert not all(torch.equal(before[0][k], before[1][k]) for k in before[0])
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


class _SlowLoader:
    """The trainer's loader with `delay` seconds of waiting before each batch (a starved GPU, in miniature)."""

    def __init__(self, loader, delay: float):
        self.loader, self.delay = loader, delay

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch

    def __getattr__(self, name):
        return getattr(self.loader, name)


def test_data_wait_fraction_is_recorded_and_sees_a_slow_loader(tiny_data, tmp_path):
    tr = _in_process_trainer(tiny_data, tmp_path / "o", max_steps=3)
    tr.train_loader = _SlowLoader(tr.train_loader, 0.5)
    tr.train()
    rec = tr.state.history[-1]
    # the 3 batches each slept 0.5 s before arriving: all of it is counted as waiting
    assert rec["data_wait_s"] >= 1.5, rec
    assert 0.0 < rec["data_wait_fraction"] <= 1.0


def test_too_many_nonfinite_losses_stop_with_checkpoints_intact(tiny_data, tmp_path):
    from cslr.trainer.losses import teacher_loss
    from cslr.trainer.trainer import NonFiniteLossError

    calls = {"n": 0}

    def broken_after_first_epoch(out, batch):
        calls["n"] += 1
        loss, parts = teacher_loss(out, batch, 0.5)
        return (loss * float("nan") if tr.state.epoch >= 1 else loss), parts

    tr = _in_process_trainer(tiny_data, tmp_path / "o", loss_fn=broken_after_first_epoch, max_bad_steps=2)
    tr.cfg.optim.epochs = 2
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite losses"):
        tr.train()
    from cslr.trainer.checkpoint import list_checkpoints, load_trainer_state

    ckpts = list_checkpoints(tmp_path / "o" / "checkpoints")
    assert ckpts and load_trainer_state(ckpts[-1])["epoch"] == 1  # the epoch-1 checkpoint, untouched
    assert not list((tmp_path / "o" / "checkpoints").glob(".tmp-*"))


def test_early_stopping_after_patience_evaluations_without_improvement(tiny_data, tmp_path):
    tr = _in_process_trainer(tiny_data, tmp_path / "o", patience=2)
    # A model that cannot change (learning rate 0, BatchNorm statistics frozen) has the same dev WER every epoch.
    tr.cfg.optim.epochs = 6
    tr.scheduler.base_lrs = [0.0] * len(tr.scheduler.base_lrs)
    for m in tr.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    tr.train()
    st = tr.state
    assert st.stopped_early and st.best_epoch == 1
    assert [h["epoch"] for h in st.history] == [1, 2, 3]  # best at 1, then 2 evaluations without improvement


def test_wall_time_carries_over_a_resume(tiny_data, tmp_path):
    tr = _in_process_trainer(tiny_data, tmp_path / "o", max_steps=2)
    tr.train()
    saved = tr.save("test")
    before = tr.state.wall_time_s
    assert before > 0
    again = _in_process_trainer(tiny_data, tmp_path / "o")
    fresh = again.wall_time()
    again.load(saved)
    assert again.wall_time() >= before + fresh  # the earlier run's time counts, not only this process's


def test_bf16_autocast_on_cpu(tiny_data, tmp_path):
    tr = _in_process_trainer(tiny_data, tmp_path / "o", max_steps=3, mixed_precision="bf16")
    assert str(tr.acc.mixed_precision) == "bf16"
    tr.train()
    assert tr.state.nonfinite_total == 0 and tr.state.global_step == 3
    assert math.isfinite(tr.state.history[-1]["train_loss"])


# ---------------------------------------------------------------------------------------------- other entry points
def test_evaluate_rescores_the_best_model_like_the_trainer(single_run, tmp_path):
    """launch/evaluate.py on best_model.pth with the trainer's beam gives the test WER that results.json holds,
    and its CTM, scored by launch/score.py against an STM of the references, gives it again."""
    from cslr.eval.wer import read_ctm

    out, _ = single_run
    res = json.loads((out / "results.json").read_text())
    proc = run_cmd([sys.executable, str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(out / "best_model.pth"),
                    "--split", "test", "--beam", "2", "--num_workers", "0", "--out", str(tmp_path)], timeout=300)
    check_ok(proc)
    got = json.loads((tmp_path / "test_wer.json").read_text())
    assert got["wer"] == pytest.approx(res["test_wer"]) and got["sub"] == res["test_sub"]
    assert f"test WER {res['test_wer']:.2f}%" in proc.stdout and "signer" in proc.stdout.lower()
    hyps = read_ctm(tmp_path / "test_hyp.ctm")
    assert len(hyps) == 8  # every test video of the tiny corpus, also those decoded to nothing


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path):
    proc = run_cmd([sys.executable, str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(tmp_path / "no.pth")],
                   timeout=120)
    assert proc.returncode == 2 and f"{tmp_path / 'no.pth'}" in proc.stderr, proc.stderr


def test_overfit_reaches_zero_wer_or_says_how_far_it_got(tiny_data):
    common = [sys.executable, str(REPO / "launch" / "overfit.py"), "--data", str(tiny_data), "--samples", "4",
              "--arch", "teacher_tiny", "--modality", "pose", "--learning_rate", "0.005", "--eval_every", "10"]
    ok = run_cmd([*common, "--max_steps", "400"], timeout=300)
    check_ok(ok)
    assert "reached 0% WER at step" in ok.stdout
    short = run_cmd([*common, "--max_steps", "10"], timeout=300)
    assert short.returncode == 1 and "did not reach 0% WER in 10 steps; best WER" in short.stdout, short.stdout
