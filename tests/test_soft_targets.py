"""Soft-target generation and the loader zip (cslr/datasets/soft_targets.py, launch/soft_targets.py, pipeline.py).

    pytest tests/test_soft_targets.py -q

A real 2-rank `accelerate launch` over the 3 train shards of the tiny corpus (every key once, sidecars mirror the
data, values equal the teacher's own output), the same bytes from one process, resume after an interruption,
refusal of other settings, --verify, dense targets, explicit records of bad videos, and the train loader's zip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cslr.datasets import soft_targets as st
from cslr.recipes import soft_targets as gen
from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.schema import RGB
from cslr.datasets.vocab import Vocabulary
from cslr.io import atomic_write_json, sha256_file
from cslr.datasets.writer import load_manifest, tar_bytes, write_shard

from conftest import REPO, accelerate_cmd, check_ok, clean_env, free_port, run_cmd, save_untrained

SCRIPT = str(REPO / "launch" / "soft_targets.py")
TOPK, TEMPERATURE = 4, 2.0


class OneProcess:
    """The part of an Accelerator that `generate` uses, for fast in-process runs."""

    device = torch.device("cpu")
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass

    def autocast(self):
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory) -> Path:
    """An untrained teacher_tiny saved like Trainer.save_best (weights + the metadata model_from_checkpoint needs)."""
    return save_untrained(tiny_data, tmp_path_factory.mktemp("teacher"))


def flags(teacher: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(teacher), "--data", str(data), "--out", str(out), "--topk", str(TOPK),
            "--temperature", str(TEMPERATURE), "--batch_size", "3", *extra]


@pytest.fixture(scope="module")
def two_ranks(tiny_data, teacher, tmp_path_factory) -> Path:
    """Soft targets written by a real 2-rank launch (DDP over gloo on CPU)."""
    shards = load_manifest(tiny_data)["splits"]["train"]["shards"]
    assert len(shards) == 3 and len({s["count"] for s in shards}) > 1  # 3 shards over 2 ranks, uneven
    out = tmp_path_factory.mktemp("soft") / "two_ranks"
    proc = run_cmd(accelerate_cmd("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port",
                                  str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT,
                                  *flags(teacher, tiny_data, out)),
                   env=clean_env(ACCELERATE_USE_CPU="true"), timeout=300)
    check_ok(proc)
    assert "over 2 ranks; complete" in proc.stderr
    return out


def run_local(teacher: Path, data: Path, out: Path, **kw) -> dict | None:
    """In-process generation with one thread (the subprocesses run with OMP_NUM_THREADS=1: same numerics)."""
    cfg = gen.SoftConfig(checkpoint=str(teacher), out=str(out), data=str(data), topk=TOPK, temperature=TEMPERATURE,
                        batch_size=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return gen.generate(dataclasses.replace(cfg, **kw), OneProcess())
    finally:
        torch.set_num_threads(threads)


def sidecar_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_shard_assignment_is_disjoint_and_covering(num_shards):
    names = [f"train-{i:06d}.tar" for i in range(num_shards)]
    for world in range(1, 6):
        parts = [gen.assign_shards(names, r, world) for r in range(world)]
        assert sorted(n for p in parts for n in p) == names  # every shard exactly once
        assert parts == [gen.assign_shards(names, r, world) for r in range(world)]  # deterministic


def test_a_record_carries_the_hypothesis_and_refuses_one_longer_than_its_frames():
    layout = st.SoftLayout.of(3, 300)  # V > 256: uint16 ids
    logp, idx = np.zeros((4, 3), np.float32), np.tile(np.array([299, 1, 0]), (4, 1))
    _, idx_back, info = st.unpack_soft(st.sample_members("k", layout, logp, idx, [299, 7]))
    assert info == {"frames": 4, "hyp": [299, 7]} and idx_back.dtype == np.uint16 and idx_back[0, 0] == 299
    for bad in ([1, 2, 3, 4, 5], [0, 3]):  # longer than T', or a blank in it
        with pytest.raises(st.SoftTargetError, match="hypothesis"):
            st.sample_members("k", layout, logp, idx, bad)


def test_two_ranks_every_key_once_and_sidecars_mirror_the_data(tiny_data, teacher, two_ranks):
    data = load_manifest(tiny_data)["splits"]["train"]
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    assert sorted(sidecar_files(two_ranks)) == [s["name"] for s in data["shards"]]
    seen = []
    for shard in data["shards"]:
        records = st.read_sidecar(two_ranks / shard["name"])
        assert [r[0] for r in records] == shard["keys"]  # same keys, same order
        seen += [r[0] for r in records]
        for key, logp, idx, info in records:
            assert logp.dtype == np.float16 and idx.dtype == np.uint8 and logp.shape == idx.shape  # V < 256
            assert logp.shape == (info["frames"], TOPK) and info["frames"] > 0
            assert np.all(np.diff(logp.astype(np.float32), axis=1) <= 0)  # best first
            assert np.all((idx >= 0) & (idx < len(vocab))) and all(len(set(row)) == TOPK for row in idx.tolist())
            assert len(info["hyp"]) <= info["frames"] and all(0 < i < len(vocab) for i in info["hyp"])
    all_keys = [k for s in data["shards"] for k in s["keys"]]
    assert sorted(seen) == sorted(all_keys) and len(seen) == len(set(seen)) == data["num_samples"]

    m = st.load_soft_manifest(two_ranks)
    assert m["format"] == "cslr-soft/2" and m["split"] == "train" and m["num_samples"] == len(all_keys)
    assert (m["teacher_sha256"], m["temperature"], m["topk"], m["vocab_size"], m["image_size"], m["dtype"],
            m["index_dtype"]) == (sha256_file(teacher), TEMPERATURE, TOPK, len(vocab), 32, "float16", "uint8")
    for shard in data["shards"]:
        entry = m["shards"][shard["name"]]
        assert entry["count"] == shard["count"] and entry["data_sha256"] == shard["sha256"]
        assert entry["sha256"] == sha256_file(two_ranks / shard["name"])
        assert entry["bytes"] == (two_ranks / shard["name"]).stat().st_size
        assert entry["keys_sha256"] == st.keys_sha256(shard["keys"])


def test_values_equal_the_teacher_on_the_eval_loader(tiny_data, teacher, two_ranks):
    """Reference: the teacher run one video at a time on the ordinary eval loader, tempered, top-K, greedy."""
    from cslr.eval.decode import greedy_decode
    from cslr.models.checkpoint import model_from_checkpoint

    model, vocab, _ = model_from_checkpoint(teacher)
    records = {r[0]: r for s in sorted(two_ranks.glob("*.tar")) for r in st.read_sidecar(s)}
    cfg = DataConfig(data=str(tiny_data), batch_size=1, num_workers=0, image_size=32, pin_memory=False)
    for n, batch in enumerate(build_loader(cfg, "train", vocab, train=False)):
        if n == 6:
            break
        with torch.no_grad():
            out = model(rgb=batch["rgb"], pose=batch["pose"], lengths=batch["lengths"])
        lp = torch.log_softmax(out["log_probs"][0] / TEMPERATURE, -1)  # (T', V)
        key, logp, idx, info = records[batch["keys"][0]]
        assert info["frames"] == int(out["lengths"][0]) == model.output_length(int(batch["lengths"][0]))
        assert info["hyp"] == greedy_decode(out["log_probs"], out["lengths"])[0]  # the teacher's greedy hypothesis
        ref = lp.gather(-1, torch.from_numpy(idx).long())  # the reference at the stored labels
        torch.testing.assert_close(torch.from_numpy(logp).float(), ref, atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(ref, lp.topk(TOPK, -1).values, atol=1e-4, rtol=0)  # they are the top K


def test_one_process_equals_two_ranks_byte_for_byte(tiny_data, teacher, two_ranks, tmp_path):
    out = tmp_path / "one"
    check_ok(run_cmd([sys.executable, SCRIPT, *flags(teacher, tiny_data, out)], timeout=300))
    assert sidecar_files(out) == sidecar_files(two_ranks)
    assert (out / "manifest.json").read_bytes() == (two_ranks / "manifest.json").read_bytes()


def test_resume_keeps_complete_shards_and_rewrites_partial_ones(tiny_data, teacher, two_ranks, tmp_path):
    out = tmp_path / "resume"
    assert run_local(teacher, tiny_data, out, max_shards=1) is None  # "interrupted" after the first shard
    assert sorted(sidecar_files(out)) == ["train-000000.tar"] and not (out / "manifest.json").exists()
    problems = st.verify(tiny_data, out)
    assert any("train-000001.tar: missing" in p for p in problems) and any("manifest.json" in p for p in problems)
    # What a process killed while writing leaves: a temporary file, and a shard file without its record.
    (out / ".train-000001.tar.tmp-99999").write_bytes(b"partial")
    (out / "train-000002.tar").write_bytes(b"not a complete shard")
    before = (out / "train-000000.tar").stat()

    manifest = run_local(teacher, tiny_data, out)
    after = (out / "train-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # complete shard not rewritten
    assert not list(out.glob(".*.tmp-*"))
    assert sidecar_files(out) == sidecar_files(two_ranks)  # equals an uninterrupted run
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest == json.loads((two_ranks / "manifest.json").read_text())
    assert st.verify(tiny_data, out) == []


def test_other_settings_are_refused_unless_overwrite(tiny_data, teacher, tmp_path):
    out = tmp_path / "soft"
    run_local(teacher, tiny_data, out, max_shards=1)
    shutil.copytree(out, tmp_path / "first")
    with pytest.raises(st.SoftTargetError, match=r"other settings.*temperature.*--overwrite"):
        run_local(teacher, tiny_data, out, max_shards=1, temperature=1.0)
    with pytest.raises(st.SoftTargetError, match="is the data folder"):
        run_local(teacher, tiny_data, tiny_data)
    run_local(teacher, tiny_data, out, max_shards=1, temperature=1.0, overwrite=True)
    rec = json.loads((out / "records" / "train-000000.tar.json").read_text())
    assert rec["settings"]["temperature"] == 1.0  # the shard was rewritten at T = 1
    logp = st.read_sidecar(out / "train-000000.tar")[0][1].astype(np.float64)
    assert not np.allclose(logp, st.read_sidecar(tmp_path / "first" / "train-000000.tar")[0][1].astype(np.float64))


def test_dense_targets_hold_every_class(tiny_data, teacher, two_ranks, tmp_path):
    out = tmp_path / "dense"
    run_local(teacher, tiny_data, out, topk=0, max_shards=1)
    vocab_size = len(Vocabulary.load(tiny_data / "vocab.txt"))
    dense, top = st.read_sidecar(out / "train-000000.tar"), st.read_sidecar(two_ranks / "train-000000.tar")
    for (key, logp, idx, info), (key2, logp_k, idx_k, _) in zip(dense, top):
        assert key == key2 and logp.shape == (info["frames"], vocab_size)
        assert np.array_equal(idx, np.broadcast_to(np.arange(vocab_size, dtype=np.int32), idx.shape))
        np.testing.assert_allclose(np.logaddexp.reduce(logp.astype(np.float64), axis=1), 0, atol=2e-2)  # normalised
        np.testing.assert_array_equal(np.take_along_axis(logp, idx_k.astype(np.int64), 1), logp_k)  # top-K agrees


def test_a_bad_video_gets_an_explicit_record(tiny_data, teacher, tmp_path):
    """A video the teacher cannot read keeps its key (a "skipped" record); the train loader skips and counts it."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    manifest = load_manifest(data)
    entry = manifest["splits"]["train"]["shards"][2]
    samples = [{**s} for s in _raw(data / entry["name"])]
    bad = samples[1]["__key__"]
    samples[1][RGB] = samples[1][RGB][:-40]  # truncated JPEG container
    entry.update({k: v for k, v in write_shard(data / entry["name"], samples).items() if k in ("sha256", "bytes")})
    atomic_write_json(data / "manifest.json", manifest)

    out = tmp_path / "soft"
    m = run_local(teacher, data, out)
    assert m["skipped"] == [{"id": bad, "shard": entry["name"], "reason": m["skipped"][0]["reason"]}]
    assert m["skipped"][0]["reason"].startswith("corrupt_member")
    records = st.read_sidecar(out / entry["name"])
    assert [r[0] for r in records] == entry["keys"] and records[1][1].shape == (0, TOPK)
    cfg = DataConfig(data=str(data), batch_size=4, num_workers=0, image_size=32, pin_memory=False,
                     soft_targets=str(out))
    loader = build_loader(cfg, "train", Vocabulary.load(data / "vocab.txt"), train=True)
    keys = [k for b in loader for k in b["keys"]]
    assert bad not in keys and (bad, "corrupt_member") in loader.skipped


def _raw(path: Path) -> list[dict]:
    from cslr.datasets.shards import iter_shard

    return [{k: v for k, v in s.items() if k != "__url__"} for s in iter_shard(path)]


# ---------------------------------------------------------------------------------------------- verify
def test_verify_cli_passes_then_names_missing_and_corrupted_shards(tiny_data, two_ranks, tmp_path):
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    proc = run_cmd([sys.executable, SCRIPT, "--data", str(tiny_data), "--out", str(out), "--verify"], timeout=120)
    check_ok(proc)
    assert "OK, complete" in proc.stdout
    (out / "train-000001.tar").unlink()
    data = bytearray((out / "train-000002.tar").read_bytes())
    data[700] ^= 0xFF
    (out / "train-000002.tar").write_bytes(bytes(data))
    proc = run_cmd([sys.executable, SCRIPT, "--data", str(tiny_data), "--out", str(out), "--verify"], timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "train-000001.tar: missing sidecar shard" in proc.stdout
    assert "train-000002.tar: checksum mismatch" in proc.stdout and "2 problem(s)" in proc.stdout


def test_verify_finds_keys_out_of_order(tiny_data, two_ranks, tmp_path):
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    name = "train-000000.tar"
    _swap_first_two(out / name)
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][name]["sha256"] = sha256_file(out / name)  # a consistent checksum: only the order is wrong
    atomic_write_json(out / "manifest.json", m)
    assert st.verify(tiny_data, out) == [f"{name}: keys differ from the data shard at position 0 (16 sidecar keys, "
                                         f"16 data keys)"]


def _swap_first_two(path: Path) -> list[str]:
    samples = _raw(path)
    samples[0], samples[1] = samples[1], samples[0]
    path.write_bytes(tar_bytes(samples)[0])
    return [s["__key__"] for s in samples[:2]]


# ---------------------------------------------------------------------------------------------- loader
def _soft_cfg(data: Path, soft: Path, **kw) -> DataConfig:
    return DataConfig(**{**dict(data=str(data), batch_size=4, num_workers=0, image_size=32, pin_memory=False,
                                soft_targets=str(soft)), **kw})


def test_loader_zips_soft_targets_into_train_batches(tiny_data, two_ranks):
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    records = {r[0]: r for s in sorted(two_ranks.glob("*.tar")) for r in st.read_sidecar(s)}
    loader = build_loader(_soft_cfg(tiny_data, two_ranks), "train", vocab, train=True)
    seen = set()
    for batch in loader:
        b, t = len(batch["keys"]), int(batch["soft_lengths"].max())
        assert batch["soft_logp"].shape == (b, t, TOPK) and batch["soft_logp"].dtype == torch.float32
        assert batch["soft_idx"].shape == (b, t, TOPK) and batch["soft_idx"].dtype == torch.int64
        assert batch["soft_lengths"].dtype == torch.int64
        for i, key in enumerate(batch["keys"]):
            _, logp, idx, info = records[key]
            n = int(batch["soft_lengths"][i])
            assert n == info["frames"]
            assert torch.equal(batch["soft_logp"][i, :n], torch.from_numpy(logp).float())
            assert torch.equal(batch["soft_idx"][i, :n], torch.from_numpy(idx).long())
            assert not batch["soft_logp"][i, n:].any() and not batch["soft_idx"][i, n:].any()  # zero padding
            seen.add(key)
    assert len(seen) > len(records) // 2
    dev = next(iter(build_loader(_soft_cfg(tiny_data, two_ranks), "dev", vocab, train=False)))
    assert "soft_logp" not in dev  # only the train split is zipped


def test_loader_fails_loudly_on_key_mismatch_or_missing_sidecar(tiny_data, two_ranks, tmp_path):
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    first, second = _swap_first_two(out / "train-000001.tar")
    with pytest.raises(st.SoftTargetError, match=rf"shard train-000001.tar: key mismatch: data key '{second}', "
                                                 rf"sidecar key '{first}'"):
        list(build_loader(_soft_cfg(tiny_data, out), "train", vocab, train=True))
    (out / "train-000001.tar").unlink()
    with pytest.raises(st.SoftTargetError, match="data shard train-000001.tar: no sidecar shard"):
        list(build_loader(_soft_cfg(tiny_data, out, num_workers=1), "train", vocab, train=True))  # from a worker


def test_loader_skips_and_counts_a_video_the_teacher_skipped(tiny_data, two_ranks, tmp_path):
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    samples = _raw(out / "train-000000.tar")
    key = samples[3]["__key__"]
    layout = st.SoftLayout.of(TOPK, len(Vocabulary.load(tiny_data / "vocab.txt")))
    samples[3] = st.skipped_members(key, layout)
    data = tar_bytes(samples)[0]
    (out / "train-000000.tar").write_bytes(data)
    # as generation would have recorded it: the sidecar manifest holds the checksum of the shard it wrote
    m = json.loads((out / "manifest.json").read_text())
    m["shards"]["train-000000.tar"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    atomic_write_json(out / "manifest.json", m)
    loader = build_loader(_soft_cfg(tiny_data, out), "train", Vocabulary.load(tiny_data / "vocab.txt"), train=True)
    keys = [k for b in loader for k in b["keys"]]
    assert key not in keys and loader.skipped == [(key, "no_soft_target")]


def test_loader_checks_the_sidecar_manifest(tiny_data, two_ranks, tmp_path):
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    m = json.loads((out / "manifest.json").read_text())
    for change, needle in [({"split": "dev"}, "soft targets of split 'dev'"),
                           ({"vocab_size": 99}, "teacher vocabulary of 99 classes, the data has"),
                           ({"shards": {}}, "no sidecar for data shard train-000000.tar")]:
        atomic_write_json(out / "manifest.json", {**m, **change})
        with pytest.raises(st.SoftTargetError, match=needle):
            build_loader(_soft_cfg(tiny_data, out), "train", vocab, train=True)
    (out / "manifest.json").unlink()
    with pytest.raises(st.SoftTargetError, match="generation of .* is incomplete"):
        build_loader(_soft_cfg(tiny_data, out), "train", vocab, train=True)


def test_a_sidecar_shard_from_a_folder_of_another_temperature_is_caught(tiny_data, teacher, two_ranks, tmp_path):
    """Issue #15 defect 6: a sidecar shard made at T=1 copied into a T=2 folder has the same size and keys; its
    sha256 against the folder's manifest stops the run naming the shard (before: distilled at the wrong T)."""
    other = tmp_path / "t1"
    run_local(teacher, tiny_data, other, temperature=1.0)
    out = tmp_path / "soft"
    shutil.copytree(two_ranks, out)
    name = "train-000000.tar"
    assert (other / name).stat().st_size == (out / name).stat().st_size
    shutil.copyfile(other / name, out / name)
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    with pytest.raises(Exception, match=rf"{name}: sha256 differs from the manifest"):
        list(build_loader(_soft_cfg(tiny_data, out), "train", vocab, train=True))


def test_soft_targets_flag_comes_from_data_config_only():
    from cslr.trainer.config import TrainConfig, _leaf_fields

    assert _leaf_fields(TrainConfig())["soft_targets"][0] == "data"


def test_student_trains_on_the_sidecars_offline(tiny_data, two_ranks, tmp_path):
    """End to end: launch/student.py with --soft_targets reads the sidecars through the loader (no teacher run)."""
    out = tmp_path / "student"
    proc = run_cmd([sys.executable, str(REPO / "launch" / "student.py"), "--data", str(tiny_data),
                    "--soft_targets", str(two_ranks), "--temperature", str(TEMPERATURE), "--alpha", "0.7",
                    "--teacher_checkpoint", "", "--output_dir", str(out), "--arch", "student_tiny",
                    "--image_size", "32", "--batch_size", "4", "--num_workers", "1", "--epochs", "2",
                    "--report_to", "none", "--beam_width", "2", "--resume", ""], timeout=600)
    check_ok(proc)
    log = (out / "training.log").read_text()
    assert f"KD (offline): soft targets from {two_ranks}" in log
    res = json.loads((out / "results.json").read_text())
    assert res["epochs_run"] == 2 and res["test_wer"] is not None
    assert all(math.isfinite(h["train_loss"]) for h in res["history"])
    # a temperature other than the sidecars' is refused before training
    bad = run_cmd([sys.executable, str(REPO / "launch" / "student.py"), "--data", str(tiny_data),
                   "--soft_targets", str(two_ranks), "--temperature", str(TEMPERATURE + 1), "--teacher_checkpoint", "",
                   "--output_dir", str(tmp_path / "bad"), "--arch", "student_tiny", "--num_workers", "0",
                   "--report_to", "none", "--resume", ""], timeout=300)
    assert bad.returncode == 2 and "temperature" in bad.stderr, bad.stderr
