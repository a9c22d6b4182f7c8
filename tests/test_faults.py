"""The fault campaign of issue #15 as tests: hostile input and a flaky cluster, each case at tiny size with its precise
outcome (an error naming the file and the problem / skipped and counted / the same result as without the fault).

    pytest -q tests/test_faults.py                 # all (the slow ones launch real training processes)
    pytest -q tests/test_faults.py -m "not slow"

Sections: checkpoints and resume, evaluation accounting, flags, text files, scoring, shards and the loader, soft
targets, and hypothesis properties (CTM/STM parsing, the protocol normaliser, the shard reader on random bytes).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cmd
from test_trainer import _in_process_trainer, tiny_flags

from cslr.trainer import checkpoint as ckpt

TEACHER = str(REPO / "launch" / "teacher.py")


# ---------------------------------------------------------------------------------------------- checkpoints
class _Payload:
    """Unpickling this runs `touch MARKER`: what a planted checkpoint file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_pickles(folder: Path, marker: Path) -> None:
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "scheduler.bin"):
        with open(folder / name, "wb") as f:
            pickle.dump(_Payload(marker), f)


@pytest.fixture(scope="module")
def two_checkpoints(tiny_data, tmp_path_factory) -> Path:
    """A run folder with two complete checkpoints (steps 2 and 4), trained in process."""
    out = tmp_path_factory.mktemp("faults") / "run"
    tr = _in_process_trainer(tiny_data, out, max_steps=4, save_every_steps=2, keep_last=3)
    tr.train()
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")][-2:] == [
        "ckpt-e0000-s000000002", "ckpt-e0000-s000000004"]
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _resume(tiny_data, out: Path, resume: str = "auto"):
    tr = _in_process_trainer(tiny_data, out, max_steps=6, save_every_steps=2, keep_last=3)
    path = ckpt.find_resume(resume, tr.ckpt_dir)
    tr.load(path)
    return tr, path


def test_checkpoint_holds_no_pickle_and_lists_its_files(two_checkpoints):
    newest = ckpt.list_checkpoints(two_checkpoints / "checkpoints")[-1]
    names = {p.name for p in newest.iterdir()}
    assert not any(n.endswith(".pkl") for n in names), names
    manifest = json.loads((newest / ckpt.MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == names - {ckpt.MANIFEST_FILE}
    assert "scheduler" in json.loads((newest / ckpt.STATE_FILE).read_text())


def test_resume_never_unpickles_planted_files(tiny_data, two_checkpoints, tmp_path):
    """Defect 2: a pickle with os.system planted in the checkpoint folder is not executed on --resume auto."""
    out = _copy_run(two_checkpoints, tmp_path / "run")
    marker = tmp_path / "PWNED"
    newest = ckpt.list_checkpoints(out / "checkpoints")[-1]
    _plant_pickles(newest, marker)
    tr, path = _resume(tiny_data, out)
    assert path == newest and not marker.exists()
    assert tr.state.global_step == 4 and tr.scheduler.last_epoch == 4


def test_resume_restores_rng_and_schedule_exactly(tiny_data, two_checkpoints, tmp_path):
    """The RNG streams after a load are those saved (Python, NumPy, torch), the schedule is at the saved step."""
    import random

    import numpy as np

    out = _copy_run(two_checkpoints, tmp_path / "run")
    newest = ckpt.list_checkpoints(out / "checkpoints")[-1]
    state = json.loads((newest / ckpt.STATE_FILE).read_text())
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    tr, _ = _resume(tiny_data, out)
    got = (random.random(), float(np.random.rand()), float(torch.rand(())))
    torch.manual_seed(5), random.seed(5)
    tr.load(newest)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == got
    assert tr.scheduler.state_dict()["last_epoch"] == state["scheduler"]["last_epoch"]


@pytest.mark.parametrize("damage, needle", [
    ("truncate_model", "model.safetensors: .* bytes, .* says"),
    ("corrupt_rng", "rng_state_0.safetensors: sha256 differs"),
    ("missing_rng", "rng_state_0.safetensors: missing"),
    ("state_not_json", "trainer_state.json: .* bytes, .* says"),
    ("no_manifest", "checkpoint incomplete|older version"),
])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tiny_data, two_checkpoints, tmp_path, caplog,
                                                             damage, needle):
    """Defects 3 and 4: the newest checkpoint damaged -> skipped with a warning naming the file, the previous complete
    one is resumed; the damaged one named explicitly -> an error naming the file."""
    import re

    out = _copy_run(two_checkpoints, tmp_path / "run")
    older, newest = ckpt.list_checkpoints(out / "checkpoints")[-2:]
    if damage == "truncate_model":
        f = newest / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "corrupt_rng":
        f = newest / "rng_state_0.safetensors"
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 8):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "missing_rng":
        (newest / "rng_state_0.safetensors").unlink()
    elif damage == "state_not_json":
        (newest / ckpt.STATE_FILE).write_text("{not json")
    elif damage == "no_manifest":
        (newest / ckpt.MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="cslr"):
        tr, path = _resume(tiny_data, out)
    assert path == older and tr.state.global_step == 2
    text = caplog.text
    assert re.search(needle, text) and str(newest) in text and f"falling back to {older.name}" in text, text
    with pytest.raises(ckpt.CheckpointError, match=needle):
        ckpt.find_resume(str(newest), out / "checkpoints")


def test_no_valid_checkpoint_is_an_error_not_a_fresh_start(two_checkpoints, tmp_path):
    out = _copy_run(two_checkpoints, tmp_path / "run")
    for p in ckpt.list_checkpoints(out / "checkpoints"):
        (p / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ckpt.CheckpointError, match="no valid checkpoint to resume from.*model.safetensors"):
        ckpt.find_resume("auto", out / "checkpoints")


def test_unreadable_state_files_name_the_file(tmp_path):
    """Content that passes the manifest but cannot be used (written by something else) still names the file."""
    (tmp_path / ckpt.STATE_FILE).write_text("[1, 2")
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state.json: not valid JSON"):
        ckpt.load_trainer_state(tmp_path)
    bad = tmp_path / "rng_state_0.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ckpt.CheckpointError, match=r"rng_state_0.safetensors: RNG state unreadable"):
        ckpt.load_rng(bad)


def test_full_disk_on_save_names_the_checkpoint_and_keeps_the_old_ones(tiny_data, two_checkpoints, tmp_path,
                                                                         monkeypatch):
    out = _copy_run(two_checkpoints, tmp_path / "run")
    before = ckpt.list_checkpoints(out / "checkpoints")
    tr, _ = _resume(tiny_data, out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "atomic_write_json", full)
    with pytest.raises(OSError, match=r"saving checkpoint .*\.tmp-ckpt-.*No space left on device.* intact"):
        tr.save("test")
    assert ckpt.list_checkpoints(out / "checkpoints") == before
    assert ckpt.find_resume("auto", out / "checkpoints") == before[-1]



def _relist(folder: Path, name: str) -> None:
    """Rewrite the manifest entry of `name` to match the file, as someone planting it would."""
    manifest = json.loads((folder / ckpt.MANIFEST_FILE).read_text())
    f = folder / name
    manifest["files"][name] = {"bytes": f.stat().st_size, "sha256": ckpt.sha256_file(f)}
    (folder / ckpt.MANIFEST_FILE).write_text(json.dumps(manifest))


def _plant_engine_pickle(folder: Path, name: str, marker: Path) -> None:
    """Replace a DeepSpeed engine file by a torch file (same zip format) carrying the payload; manifest to match."""
    f = folder / name
    state = torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else {}
    torch.save({**state, "extra": _Payload(marker)}, f)
    _relist(folder, name)


def test_deepspeed_engine_files_are_loaded_weights_only_before_deepspeed(tmp_path):
    """Defect 2 under DeepSpeed (file level): an engine file with a pickled os.system, listed in a manifest rewritten
    to match, is refused naming the file and what it pickles, without running; an unlisted engine file is refused;
    the plain classes of a real ZeRO optimizer file pass."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from safetensors.torch import save_file

    folder, marker = tmp_path / "ckpt-e0000-s000000002", tmp_path / "PWNED"
    (folder / "pytorch_model").mkdir(parents=True)
    (folder / ckpt.STATE_FILE).write_text("{}")
    save_file({"torch": torch.get_rng_state()}, str(folder / ckpt.rng_file(0)))
    model, optim = "pytorch_model/mp_rank_00_model_states.pt", "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "ds_version": "0"}, folder / model)
    torch.save({"optimizer_state_dict": {"zero_stage": ZeroStageEnum.gradients, "loss_scaler": LossScaler(1.0),
                                         "single_partition_of_fp32_groups": [torch.zeros(3)]}}, folder / optim)
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": ckpt.sha256_file(folder / n)}
             for n in (ckpt.STATE_FILE, ckpt.rng_file(0), model, optim)}
    (folder / ckpt.MANIFEST_FILE).write_text(json.dumps({"format": ckpt.FORMAT, "world_size": 1, "files": files}))
    ckpt.verify_checkpoint(folder)  # intact

    _plant_engine_pickle(folder, model, marker)
    with pytest.raises(ckpt.CheckpointError, match=r"mp_rank_00_model_states.pt: not a file of plain tensors .*"
                                                   r"pickles posix.system.*refused without running it"):
        ckpt.verify_checkpoint(folder)
    assert not marker.exists()
    with pytest.raises(ckpt.CheckpointError, match="no valid checkpoint to resume from.*posix.system"):
        ckpt.find_resume("auto", tmp_path)
    assert not marker.exists()

    torch.save({"module": {"w": torch.ones(2)}}, folder / model)
    _relist(folder, model)
    ckpt.verify_checkpoint(folder)
    torch.save({"w": torch.ones(1)}, folder / "pytorch_model" / "mp_rank_01_model_states.pt")  # DeepSpeed globs
    with pytest.raises(ckpt.CheckpointError, match=r"mp_rank_01_model_states.pt: not listed in .*checkpoint.json"):
        ckpt.verify_checkpoint(folder)



@pytest.mark.slow
def test_deepspeed_resume_refuses_a_planted_engine_file_and_resumes_an_intact_one(tiny_data, tmp_path):
    """Defect 2 under DeepSpeed ZeRO-2 (a real run on CPU): a pickled os.system in the newest checkpoint's
    `mp_rank_00_model_states.pt` (manifest rewritten to match) is skipped by --resume auto for the intact older
    checkpoint, which resumes; named explicitly it is an error naming the file. The payload never runs."""
    from conftest import accelerate_cmd, check_ok, clean_env, free_port

    # "reduce_bucket_size": "auto" needs a `model.config` (a transformers model): a number here
    ds = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    ds["zero_optimization"]["reduce_bucket_size"] = 50_000_000
    (tmp_path / "zero2.json").write_text(json.dumps(ds))
    acc_cfg = (REPO / "configs/accelerate/deepspeed_zero2.yaml").read_text()
    (tmp_path / "zero2.yaml").write_text(acc_cfg.replace("configs/deepspeed/zero2.json", str(tmp_path / "zero2.json")))
    out, marker = tmp_path / "ds", tmp_path / "PWNED"

    def launch(*extra: str):
        return run_cmd(accelerate_cmd("--config_file", str(tmp_path / "zero2.yaml"), "--num_processes", "1",
                                      "--main_process_port", str(free_port()), TEACHER,
                                      *tiny_flags(tiny_data, out, "--epochs", "1", "--save_every_steps", "2", *extra)),
                       env=clean_env(DS_ACCELERATOR="cpu"), timeout=1200)

    check_ok(launch("--max_steps", "4"))
    old, newest = ckpt.list_checkpoints(out / "checkpoints")
    assert newest.name == "ckpt-e0000-s000000004" and (newest / "pytorch_model").is_dir()
    planted = "pytorch_model/mp_rank_00_model_states.pt"
    _plant_engine_pickle(newest, planted, marker)

    proc = launch("--max_steps", "6", "--resume", str(newest))
    assert proc.returncode != 0 and f"{newest / planted}: not a file of plain tensors" in proc.stderr, proc.stderr
    assert not marker.exists()

    proc = launch("--max_steps", "6", "--resume", "auto")
    check_ok(proc)
    log = (out / "training.log").read_text()
    assert f"skipping damaged checkpoint: {newest / planted}: not a file of plain tensors" in log
    assert f"resumed from {old} (epoch 0, batch 2, step 2)" in log
    assert json.loads((out / "results.json").read_text())["history"]  # trained on from the intact checkpoint
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- evaluation accounting
def _data_copy(tiny_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _damage_shard(path: Path, how: str) -> None:
    if how == "remove":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("how, workers", [("remove", 0), ("truncate", 0), ("truncate", 1)])
def test_eval_loader_reports_a_lost_shard_after_its_last_batch(tiny_data, tmp_path, how, workers):
    """Defect 1: the reports of a shard lost at the end of a split reach the loader's counters although no later
    batch carries them."""
    from cslr.datasets.pipeline import DataConfig, build_loader
    from cslr.datasets.vocab import Vocabulary

    data = _data_copy(tiny_data, tmp_path)
    _damage_shard(data / "dev-000000.tar", how)
    loader = build_loader(DataConfig(data=str(data), num_workers=workers, image_size=32), "dev",
                          Vocabulary.load(data / "vocab.txt"), train=False)
    keys = [k for b in loader for k, v in zip(b["keys"], b["valid"]) if v]
    assert loader.skip_counts["bad_shard"] == 1 and loader.skipped == [("dev-000000.tar", "bad_shard")]
    assert len(keys) < 8 and len(loader.listed_keys) == 8


@pytest.mark.parametrize("how", ["remove", "truncate"])
def test_incomplete_dev_split_is_an_error_naming_what_was_lost(tiny_data, tmp_path, how):
    from cslr.eval.evaluate import IncompleteEvaluation

    data = _data_copy(tiny_data, tmp_path)
    _damage_shard(data / "dev-000000.tar", how)
    tr = _in_process_trainer(data, tmp_path / "o", max_steps=1)
    with pytest.raises(IncompleteEvaluation, match=r"of 8 listed dev videos decoded; \d+ not evaluated .*"
                                                   r"dev-000000.tar \(bad_shard\).*--allow_incomplete_eval"):
        tr.evaluate_dev()


def test_allowed_incomplete_dev_is_scored_over_what_was_read_and_never_best(tiny_data, tmp_path):
    data = _data_copy(tiny_data, tmp_path)
    _damage_shard(data / "dev-000000.tar", "truncate")
    (tmp_path / "o").mkdir()
    tr = _in_process_trainer(data, tmp_path / "o", max_steps=1, allow_incomplete_eval=True)
    tr.train()
    rec = tr.state.history[-1]
    assert rec["dev_videos_listed"] == 8 and 0 < rec["dev_videos"] < 8 and rec["dev_wer"] is not None
    assert rec["dev_skipped"] == [["dev-000000.tar", "bad_shard"]]
    assert tr.state.best_dev_wer is None and not (tmp_path / "o" / "best_model.pth").exists()


@pytest.mark.slow
def test_evaluate_py_refuses_an_incomplete_split_and_counts_with_the_flag(tiny_data, tmp_path):
    from conftest import save_untrained

    data = _data_copy(tiny_data, tmp_path)
    ck = save_untrained(data, tmp_path)
    cmd = [sys.executable, str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(ck), "--data", str(data),
           "--split", "dev", "--beam", "1", "--num_workers", "0"]
    _damage_shard(data / "dev-000000.tar", "remove")
    proc = run_cmd(cmd, timeout=300)
    assert proc.returncode == 1 and "0 of 8 listed dev videos decoded" in proc.stderr, proc.stderr
    assert "dev-000000.tar (bad_shard)" in proc.stderr and "--allow_incomplete" in proc.stderr
    proc = run_cmd(cmd + ["--allow_incomplete"], timeout=300)
    assert proc.returncode == 0 and "0 of 8 listed dev videos decoded" in proc.stdout, proc.stderr
    saved = json.loads((tmp_path / "dev_wer.json").read_text())
    assert saved["coverage"]["videos_listed"] == 8 and saved["coverage"]["complete"] is False


# ---------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flag, value", [
    ("--min_lr_ratio", "-1"), ("--shuffle_buffer", "0"), ("--crop_scale", "0.5"), ("--crop_scale", "0.9 0.5"),
    ("--bucket_size", "-1"), ("--image_size", "0"), ("--max_bad_steps", "-1"), ("--max_steps", "-5"),
    ("--max_frames_per_batch", "-5"), ("--save_every_steps", "-1"), ("--protocol", "foo"), ("--keep_last", "-1"),
    ("--temporal_scale", "1.5"), ("--max_grad_norm", "-1"), ("--learning_rate", "nan"), ("--resume", "/no/such"),
])
def test_bad_training_flag_exits_2_naming_it_before_any_work(flag, value, tmp_path, capsys):
    """Defect 7: the flag's range is checked before any data, process group or output folder is touched."""
    from cslr.recipes.train import train_main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(tmp_path / "no-data"), "--output_dir", str(out), flag, *value.split()], "t", None)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("script, flag, value", [
    ("evaluate.py", "--beam", "0"), ("evaluate.py", "--batch_size", "0"), ("evaluate.py", "--num_workers", "-1"),
    ("evaluate.py", "--protocol", "foo"), ("evaluate.py", "--pose_stride", "0"),
    ("evaluate.py", "--window", "10"), ("evaluate.py", "--hop", "0"), ("soft_targets.py", "--topk", "-1"),
    ("soft_targets.py", "--temperature", "0"), ("soft_targets.py", "--batch_size", "0"),
    ("soft_targets.py", "--image_size", "-3"), ("soft_targets.py", "--max_shards", "-1"),
])
def test_bad_evaluate_and_soft_target_flags_exit_2_naming_them(script, flag, value, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"launch_{script[:-3]}", REPO / "launch" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as e:
        mod.main(["--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path / "o"), flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- text files, scoring
def test_vocab_with_a_bom_keeps_its_first_gloss(tmp_path):
    """Defect 5: a UTF-8 BOM no longer turns the first gloss into an unknown one."""
    from cslr.datasets.vocab import Vocabulary

    f = tmp_path / "vocab.txt"
    f.write_bytes("\ufeffAPFEL\nBAUM\n".encode("utf-8"))
    vocab = Vocabulary.load(f)
    assert vocab.glosses == ["APFEL", "BAUM"] and vocab.encode("APFEL BAUM") == ([1, 2], [])


@pytest.mark.parametrize("content, needle", [
    (b"", "empty vocabulary"), (b"\n  \n", "empty vocabulary"), (b"APFEL\n\xff\xfeBAUM\n", "not UTF-8 text"),
    (b"APFEL\nAPFEL\n", "duplicate glosses"),
])
def test_bad_vocab_file_is_named(tmp_path, content, needle):
    from cslr.datasets.vocab import Vocabulary

    f = tmp_path / "vocab.txt"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=f"{f}: .*{needle}"):
        Vocabulary.load(f)


def test_stm_and_ctm_with_a_bom_parse_like_without(tmp_path):
    from cslr.eval.wer import read_ctm, read_stm

    stm, ctm = tmp_path / "ref.stm", tmp_path / "hyp.ctm"
    stm.write_bytes("\ufeffv1 1 signer01 0.0 1.79769e+308 A B\n".encode())
    ctm.write_bytes("\ufeffv1 1 0.00 0.01 A\nv1 1 0.01 0.01 B\n".encode())
    assert read_stm(stm) == {"v1": ("signer01", ["A", "B"])}
    assert read_ctm(ctm) == {"v1": ["A", "B"]}


@pytest.mark.parametrize("line, needle", [
    ("v1 1 nan 0.01 A", "start time 'nan' is not a finite number"),
    ("v1 1 0.00 inf A", "duration 'inf' is not a finite number"),
    ("v1 1 x 0.01 A", "start time 'x' is not a number"),
    ("v1 1 0.00 A", "needs 5 or 6 fields"),
])
def test_bad_ctm_line_is_named_with_its_line_number(tmp_path, line, needle):
    from cslr.eval.wer import read_ctm

    ctm = tmp_path / "hyp.ctm"
    ctm.write_text(f"v1 1 0.00 0.01 Z\n{line}\n")
    with pytest.raises(ValueError, match=f"{ctm}:2: .*{needle}"):
        read_ctm(ctm)


def test_unknown_glosses_are_counted_per_split_and_epoch(tiny_data, tmp_path):
    """Defect 5: glosses missing from vocab.txt are counted for train and dev, in the epoch record and the totals."""
    data = _data_copy(tiny_data, tmp_path)
    glosses = (data / "vocab.txt").read_text().split()
    dropped = glosses[0]
    (data / "vocab.txt").write_text("\n".join(glosses[1:]) + "\n")
    (tmp_path / "o").mkdir()
    tr = _in_process_trainer(data, tmp_path / "o", max_steps=2)
    tr.train()
    rec = tr.state.history[-1]["unknown_glosses"]
    assert rec["dev"] > 0 and rec["train"] > 0, rec
    assert set(tr.state.unknown_glosses["dev"]) == {dropped} and tr.state.unknown_glosses["dev"][dropped] == rec["dev"]


# ---------------------------------------------------------------------------------------------- shards and the loader
def _train_loader(data: Path, workers: int = 0):
    from cslr.datasets.pipeline import DataConfig, build_loader
    from cslr.datasets.vocab import Vocabulary

    return build_loader(DataConfig(data=str(data), num_workers=workers, image_size=32, batch_size=4), "train",
                        Vocabulary.load(data / "vocab.txt"), train=True)


def test_missing_train_shard_is_an_error_naming_it(tiny_data, tmp_path):
    data = _data_copy(tiny_data, tmp_path)
    (data / "train-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 shards .* missing: \['train-000001.tar'\]"):
        _train_loader(data)


def test_train_shard_overwritten_by_another_is_refused_at_start(tiny_data, tmp_path):
    """Defect 6: a shard replaced after prepare (another shard copied over it) -> its size differs -> an error."""
    from cslr.datasets.shards import ShardChanged

    data = _data_copy(tiny_data, tmp_path)
    shutil.copy(data / "train-000001.tar", data / "train-000002.tar")
    with pytest.raises(ShardChanged, match=r"train-000002.tar: \d+ bytes, .*manifest.json says \d+"):
        _train_loader(data)


@pytest.mark.parametrize("workers", [0, 1])
def test_train_shard_changed_in_place_is_caught_as_it_streams(tiny_data, tmp_path, workers):
    """Same size, other bytes: the sha256 computed while streaming differs -> ShardChanged naming the shard."""
    from cslr.datasets.shards import ShardChanged

    data = _data_copy(tiny_data, tmp_path)
    f = data / "train-000002.tar"
    b = bytearray(f.read_bytes())
    b[-1] ^= 1  # in the tar's end blocks: every sample still reads
    f.write_bytes(bytes(b))
    loader = _train_loader(data, workers)
    with pytest.raises(Exception) as e:
        for _ in loader:
            pass
    assert isinstance(e.value, ShardChanged) or "ShardChanged" in str(e.value), e.value
    assert "train-000002.tar: sha256 differs" in str(e.value)


def test_unchanged_shards_stream_identically_with_the_check(tiny_data):
    from cslr.datasets.shards import iter_shard

    m = json.loads((tiny_data / "manifest.json").read_text())
    for e in m["splits"]["train"]["shards"]:
        a = list(iter_shard(tiny_data / e["name"]))
        assert a == list(iter_shard(tiny_data / e["name"], e["sha256"]))


@pytest.mark.parametrize("dtype", ["int16", "uint8", "int64", "bool", "complex64"])
def test_pose_of_a_non_float_dtype_is_a_named_bad_sample(dtype):
    """Defect 8: pose arrays of any dtype were accepted (ints cast silently to landmark coordinates)."""
    import io

    import numpy as np

    from cslr.datasets.shards import BadSample, npy_shape

    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 543, 3), dtype=dtype))
    with pytest.raises(BadSample, match=f"pose.npy: dtype {np.dtype(dtype)}, expected float16"):
        npy_shape(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 543, 3), dtype="float16"))
    assert npy_shape(buf.getvalue()) == (4, 543, 3)


# ---------------------------------------------------------------------------------------------- converters
def _phoenix_tree(tmp_path: Path, videos: int = 3, frames: int = 5):
    from phoenix_fixtures import RELEASE, Video, build_tree

    tree = {s: [Video(f"{s}-{i}", "REGEN WIND", num_frames=frames) for i in range(videos)]
            for s in ("train", "dev", "test")}
    return build_tree(tmp_path / RELEASE["phoenix2014"], "phoenix2014", tree).parent, tree


@pytest.mark.parametrize("value, dtype", [(1e6, "float32"), (-7e4, "float64"), (float("inf"), "float32"),
                                          (100_000, "int32")])
def test_pose_beyond_float16_range_is_skipped_naming_the_file(tmp_path, value, dtype):
    """Defect 8: the converter cast such landmarks to float16 with only a RuntimeWarning: inf in the shard."""
    import warnings

    import numpy as np

    from cslr.datasets.phoenix import ConversionError, convert
    from phoenix_fixtures import write_poses

    release, tree = _phoenix_tree(tmp_path)
    for split, videos in tree.items():
        write_poses(tmp_path / "pose", split, videos)
    bad = tmp_path / "pose" / "dev" / "dev-1.npy"
    pose = np.nan_to_num(np.load(bad)).astype(dtype)  # no NaN in an int array
    pose[2, 7, 0] = value
    np.save(bad, pose)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning: overflow
        manifest = convert("phoenix2014", release, tmp_path / "out", pose_dir=tmp_path / "pose", workers=1,
                           progress=False)
    (skip,) = manifest["skipped"]["dev"]
    assert skip["id"] == "dev-1" and str(bad) in skip["reason"] and "float16" in skip["reason"], skip
    assert manifest["splits"]["dev"]["num_samples"] == 2 and manifest["splits"]["train"]["num_samples"] == 3
    with pytest.raises(ConversionError, match=f"video dev-1: pose out of float16 range: {re.escape(str(bad))}"):
        convert("phoenix2014", release, tmp_path / "strict", pose_dir=tmp_path / "pose", workers=1, strict=True,
                progress=False)


def test_16bit_png_frames_are_scaled_to_8bit_not_clipped(tmp_path):
    """Defect 8: a 16-bit grayscale PNG (PIL mode I;16) was clipped by convert("RGB"): every frame all 255."""
    import numpy as np
    from PIL import Image

    from cslr.datasets.phoenix import convert
    from cslr.datasets.schema import unpack_jpegs
    from phoenix_fixtures import decode_gray, read_shard

    release, tree = _phoenix_tree(tmp_path, videos=1)
    folder = next(release.glob("*/features/fullFrame-210x260px/train/train-0/1"))
    levels = [0, 40, 128, 200, 255]
    for i, png in enumerate(sorted(folder.glob("*.png"))):
        Image.fromarray(np.full((26, 21), levels[i] * 257, np.uint16)).save(png)  # 16-bit: v * 257 = v in 8 bits
        assert Image.open(png).mode == "I;16"
    manifest = convert("phoenix2014", release, tmp_path / "out", workers=1, progress=False)
    sample = read_shard(tmp_path / "out" / manifest["splits"]["train"]["shards"][0]["name"])["train-0"]
    got = [decode_gray(j) for j in unpack_jpegs(sample["rgb.jpgs"])]
    assert got == pytest.approx(levels, abs=2), got


@pytest.mark.parametrize("mode", ["I", "F"])
def test_frame_of_unknown_range_is_refused_naming_the_file(tmp_path, mode):
    """32-bit integer and float images have no fixed range to scale from: a Skip naming the file and the mode."""
    import numpy as np
    from PIL import Image

    from cslr.datasets.convert import Skip, read_image

    path = tmp_path / "frame.tif"
    Image.fromarray(np.full((4, 4), 3, np.int32 if mode == "I" else np.float32), mode).save(path)
    with pytest.raises(Skip, match=f"unsupported frame: {path}.*mode {mode}"):
        read_image(path)


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # zombie = dead
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killed_converter_leaves_no_worker_alive(tmp_path):
    """Defect 9: after kill -9 of prepare.py its process-pool workers slept forever on the task queue."""
    import signal
    import subprocess
    import time

    from conftest import clean_env

    release, _ = _phoenix_tree(tmp_path, videos=30, frames=40)
    proc = subprocess.Popen([sys.executable, str(REPO / "launch" / "prepare.py"), "phoenix2014", "--root",
                             str(release), "--out", str(tmp_path / "out"), "--workers", "2", "--shard-size", "1",
                             "--no-progress"], cwd=REPO, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers, deadline = [], time.monotonic() + 120
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            workers = [int(p) for p in children_file.read_text().split()]
        except OSError:
            pass
    assert len(workers) >= 2 and proc.poll() is None, "the converter ended before its workers could be seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed converter"


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_while_converting_is_one_line_naming_the_shard(tmp_path, monkeypatch, capsys, workers):
    """Defect 9: ENOSPC while writing a shard ended the converter with a traceback."""
    from cslr.datasets import writer

    sys.path.insert(0, str(REPO / "launch"))
    import prepare

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(writer, "atomic_write_bytes", full_disk)  # the shard write (forked workers inherit it)
    release, _ = _phoenix_tree(tmp_path)
    out = tmp_path / "out"
    rc = prepare.main(["phoenix2014", "--root", str(release), "--out", str(out), "--workers", str(workers),
                       "--shard-size", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(rf"{re.escape(str(out))}/(train|dev|test)-\d{{6}}\.tar: No space left on device", lines[0]), err


# ---------------------------------------------------------------------------------------------- properties
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_GLOSS = st.text(alphabet=st.sampled_from("ABCDEFGHIKLMNORSTUZ-_02+"), min_size=1, max_size=12)
_FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FAST
@given(hyps=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.lists(_GLOSS, max_size=6),
                            max_size=5), bom=st.booleans())
def test_ctm_written_then_read_is_the_same(tmp_path, hyps, bom):
    from cslr.eval.wer import read_ctm, write_ctm

    f = tmp_path / "h.ctm"
    write_ctm(f, hyps)
    if bom:
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert read_ctm(f) == {k: v for k, v in hyps.items() if v}


@_FAST
@given(refs=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                            st.tuples(st.from_regex(r"signer0[0-9]", fullmatch=True), st.lists(_GLOSS, max_size=6)),
                            max_size=5))
def test_stm_written_then_read_is_the_same(tmp_path, refs):
    from cslr.eval.wer import read_stm, write_stm

    f = tmp_path / "r.stm"
    write_stm(f, refs)
    assert read_stm(f) == refs


@_FAST
@given(text=st.text(max_size=200))
def test_ctm_parser_on_any_text_returns_or_names_the_file(tmp_path, text):
    from cslr.eval.wer import read_ctm

    f = tmp_path / "x.ctm"
    f.write_bytes(text.encode("utf-8", "replace"))
    try:
        out = read_ctm(f)
    except ValueError as e:
        assert str(f) in str(e)
    else:
        assert all(isinstance(w, str) and w for ws in out.values() for w in ws)


@settings(max_examples=200, deadline=None)
@given(glosses=st.lists(_GLOSS, max_size=10), protocol=st.sampled_from(["phoenix2014", "phoenix2014T", "plain"]))
def test_protocol_normaliser_is_idempotent_and_never_empty_for_phoenix(glosses, protocol):
    from cslr.eval.wer import EMPTY, normalize_hypothesis, score

    once = normalize_hypothesis(glosses, protocol)
    assert normalize_hypothesis(once, protocol) == once
    if protocol != "plain":
        assert once and (once == [EMPTY] or EMPTY not in once)
    # a hypothesis equal to its reference scores 0 % after normalisation
    res = score({"v": once}, {"v": ("s", once)}, protocol=protocol)
    assert res.sub == res.dele == res.ins == 0


@_FAST
@given(data=st.binary(max_size=4096), keep=st.integers(0, 4096))
def test_shard_reader_on_random_bytes_raises_only_read_errors(tmp_path, data, keep):
    """Random bytes, or a real shard cut anywhere: samples or one of the errors the loader counts, never another."""
    import tarfile

    from cslr.datasets.shards import iter_shard
    from cslr.datasets.writer import tar_bytes

    real, _, _ = tar_bytes([{"__key__": "k1", "gloss.txt": b"A B"}, {"__key__": "k2", "gloss.txt": b"C"}])
    for blob in (data, real[:keep], real[:keep] + data):
        f = tmp_path / "s.tar"
        f.write_bytes(blob)
        try:
            samples = list(iter_shard(f))
        except (OSError, tarfile.TarError, ValueError, EOFError):
            continue
        assert all("__key__" in s for s in samples)
