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
