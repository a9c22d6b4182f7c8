"""Tests of the streaming pipeline (cslr/datasets/pipeline.py, augment.py) on tiny toy shards.

    pytest tests/test_pipeline.py -q
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.shards import ctc_min_length
from cslr.datasets.schema import LANDMARK_SLICES, NUM_LANDMARKS, SchemaError, VideoSample
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest

from toy_data import encode_frames, make_toy_dataset, toy_sample, write_dataset


def _cfg(root, **kw) -> DataConfig:
    base = dict(data=str(root), batch_size=3, num_workers=0, image_size=16, shuffle_buffer=8, pin_memory=False)
    return DataConfig(**{**base, **kw})


def _vocab(root) -> Vocabulary:
    return Vocabulary.load(root / "vocab.txt")


def _run(cfg, split="train", *, train=True, rank=0, world_size=1, epoch=0, state=None, **kw) -> list[dict]:
    loader = build_loader(cfg, split, _vocab(Path(cfg.data)), train=train, rank=rank, world_size=world_size, **kw)
    loader.set_epoch(epoch)
    if state is not None:
        loader.load_state_dict(state)
    return list(loader)


def _all_keys(root, split="train") -> list[str]:
    return [k for s in load_manifest(root)["splits"][split]["shards"] for k in s["keys"]]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if torch.is_tensor(x[k]):
                assert torch.equal(x[k].nan_to_num(7.0), y[k].nan_to_num(7.0)) and torch.equal(x[k].isnan(), y[k].isnan()) \
                    if x[k].is_floating_point() else torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), 3, 4, splits={"train": 3, "dev": 2})


# ----------------------------------------------------------------------------------------------------
# batch layout


def test_batch_shapes_dtypes_padding(toy):
    vocab = _vocab(toy)
    batches = _run(_cfg(toy, num_workers=1))
    assert batches
    for b in batches:
        bsz, t = b["rgb"].shape[:2]
        assert b["rgb"].dtype == torch.uint8 and b["rgb"].shape == (bsz, t, 3, 16, 16)
        assert b["pose"].dtype == torch.float32 and b["pose"].shape == (bsz, t, NUM_LANDMARKS, 3)
        assert b["lengths"].dtype == torch.int64 and int(b["lengths"].max()) == t
        assert torch.equal(b["mask"], torch.arange(t)[None] < b["lengths"][:, None])
        assert not b["rgb"][~b["mask"]].any() and not b["pose"][~b["mask"]].any()  # zero padding, no NaN
        assert b["valid"].all() and len(b["keys"]) == len(b["signers"]) == len(b["glosses"]) == bsz
        for i, gloss in enumerate(b["glosses"]):
            ids = vocab.encode(gloss)[0]
            assert b["target_lengths"][i] == len(ids)
            assert b["targets"][i].tolist() == ids + [0] * (b["targets"].shape[1] - len(ids))
    assert any(b["pose"][b["mask"]].isnan().any() for b in batches)  # undetected landmarks stay NaN


def test_eval_without_augmentation_returns_stored_data(tmp_path):
    """Eval with crop_scale (1, 1) on square frames of the model's size is the identity: compare with the shard."""
    rng = np.random.default_rng(1)
    samples = [toy_sample(f"v{i}", rng, num_frames=5, split="dev") for i in range(3)]
    root = write_dataset(tmp_path, {"train": [samples], "dev": [samples]})
    (batch,) = _run(_cfg(root, crop_scale=(1.0, 1.0), batch_size=4), "dev", train=False)
    for i, key in enumerate(batch["keys"]):
        s = samples[int(key[1:])]
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            frames = torch.stack([decode_jpeg(torch.frombuffer(bytearray(j), dtype=torch.uint8)) for j in s.jpegs])
        assert torch.equal(batch["rgb"][i, :5], frames)
        pose = torch.from_numpy(s.pose.astype(np.float16).astype(np.float32))
        assert torch.allclose(batch["pose"][i, :5], pose, equal_nan=True, atol=1e-6)


def test_modalities_subset(toy):
    (b, *_) = _run(_cfg(toy, modalities=("pose",)))
    assert "rgb" not in b and b["pose"].shape[-2:] == (NUM_LANDMARKS, 3)
    (b, *_) = _run(_cfg(toy, modalities=("rgb",)))
    assert "pose" not in b and b["rgb"].shape[-3:] == (3, 16, 16)


# ----------------------------------------------------------------------------------------------------
# order, splitting, resume


def test_deterministic_per_epoch(toy):
    cfg = _cfg(toy, num_workers=2)
    a, b, c = _run(cfg, epoch=3), _run(cfg, epoch=3), _run(cfg, epoch=4)
    _assert_batches_equal(a, b)
    assert [x["keys"] for x in a] != [x["keys"] for x in c]


def test_num_workers_zero_equals_one(toy):
    _assert_batches_equal(_run(_cfg(toy, num_workers=0)), _run(_cfg(toy, num_workers=1)))


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_every_rank_gets_the_same_number_of_batches(tmp_path, n_shards):
    root = make_toy_dataset(tmp_path, n_shards, 3, frames=(4, 6), size=8)
    for workers in (0, 1, 2):
        for world in (1, 2, 3, 4):
            cfg = _cfg(root, batch_size=2, num_workers=workers, image_size=8)
            loaders = [build_loader(cfg, "train", _vocab(root), train=True, rank=r, world_size=world)
                       for r in range(world)]
            counts = [sum(1 for _ in ld) for ld in loaders]
            assert counts == [len(loaders[0])] * world, (workers, world)
            assert len(loaders[0]) == -(-3 * n_shards // (world * 2))


@pytest.mark.parametrize("n_shards,workers", [(1, 0), (1, 2), (3, 1), (3, 2), (5, 2)])
def test_eval_covers_every_key_exactly_once(tmp_path, n_shards, workers):
    root = make_toy_dataset(tmp_path, 0, 3, splits={"train": 1, "dev": n_shards}, frames=(4, 6), size=8)
    for world in (1, 2, 3):
        cfg = _cfg(root, num_workers=workers, image_size=8)
        keys = [k for r in range(world) for b in _run(cfg, "dev", train=False, rank=r, world_size=world)
                for k in b["keys"]]
        assert sorted(keys) == sorted(_all_keys(root, "dev")), (world, workers)
        loaders = [build_loader(cfg, "dev", _vocab(root), train=False, rank=r, world_size=world) for r in range(world)]
        assert [len(ld) for ld in loaders] == [sum(1 for _ in ld) for ld in loaders]  # exact without bad samples


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_equals_uninterrupted_tail(toy, workers):
    cfg = _cfg(toy, num_workers=workers, batch_size=2)
    full = _run(cfg, epoch=2)
    assert len(full) >= 4
    for k in (1, 3, len(full)):
        _assert_batches_equal(_run(cfg, epoch=2, state={"epoch": 2, "batches_done": k}), full[k:])
    # state_dict after breaking off, then set_epoch of the same epoch (the trainer's loop) keeps the position
    loader = build_loader(cfg, "train", _vocab(toy), train=True)
    loader.set_epoch(2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_done": 3}
    again = build_loader(cfg, "train", _vocab(toy), train=True)
    again.load_state_dict(state)
    again.set_epoch(2)
    _assert_batches_equal(list(again), full[3:])
    again.set_epoch(2)  # a finished epoch starts over
    assert len(list(again)) == len(full)


# ----------------------------------------------------------------------------------------------------
# bad input


def _bad_dataset(tmp_path):
    """One train shard with good samples and one bad sample per failure mode."""
    rng = np.random.default_rng(2)
    good = [toy_sample(f"good{i}", rng, num_frames=6, glosses="A B") for i in range(4)]
    members = {s.key: s.to_members() for s in (toy_sample(k, rng, num_frames=6, glosses="A")
                                                 for k in ("trunc", "badjpg", "nogloss", "nopose", "badpose"))}
    members["trunc"]["rgb.jpgs"] = members["trunc"]["rgb.jpgs"][:-40]               # container truncated
    jpegs = encode_frames(rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8))
    members["badjpg"]["rgb.jpgs"] = VideoSample("x", "A", {}, jpegs=[jpegs[0][:-30]] + jpegs[1:]).to_members()["rgb.jpgs"]
    del members["nogloss"]["gloss.txt"]
    del members["nopose"]["pose.npy"]
    members["badpose"]["pose.npy"] = members["badpose"]["pose.npy"][:-100]
    zero = VideoSample("zero", "A", {"signer": "S"}, jpegs=[], pose=np.zeros((0, NUM_LANDMARKS, 3)))
    toolong = toy_sample("toolong", rng, num_frames=6, glosses="A A A B")  # CTC needs 6 steps > 6 // 2
    shard = good[:2] + list(members.values()) + [zero, toolong] + good[2:]
    return write_dataset(tmp_path, {"train": [shard], "dev": [good]}, vocab=["A", "B"])


EXPECTED_BAD = {"trunc": "corrupt_member", "badjpg": "corrupt_member", "nogloss": "missing_member",
                "nopose": "missing_member", "badpose": "corrupt_member", "zero": "zero_frames",
                "toolong": "ctc_too_long"}


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_samples_skipped_counted_and_named(tmp_path, caplog, workers):
    root = _bad_dataset(tmp_path)
    cfg = _cfg(root, num_workers=workers, temporal_scale=0.0, batch_size=2)
    loader = build_loader(cfg, "train", _vocab(root), train=True, output_length=lambda t: t // 2)
    with caplog.at_level(logging.WARNING, logger="cslr.data"):
        batches = list(loader)
    assert len(batches) == len(loader) == 6  # ceil(11 samples / 2): the epoch length counts the manifest
    assert {k for b in batches for k in b["keys"]} == {f"good{i}" for i in range(4)}
    assert dict(loader.skipped) == EXPECTED_BAD
    assert sum(loader.skip_counts.values()) == len(EXPECTED_BAD) and loader.skip_counts["corrupt_member"] == 3
    for key in EXPECTED_BAD:
        assert any(key in r.getMessage() and "train-000000.tar" in r.getMessage() for r in caplog.records)
    loader.set_epoch(1)
    assert not loader.skipped  # counters are per epoch


def test_strict_raises_with_key_and_shard(tmp_path):
    root = _bad_dataset(tmp_path)
    loader = build_loader(_cfg(root, strict=True), "train", _vocab(root), train=True)
    with pytest.raises(SchemaError, match=r"train-000000\.tar: sample trunc: corrupt_member"):
        list(loader)


def test_bad_shard_counted_or_raised(tmp_path):
    root = make_toy_dataset(tmp_path, 3, 2, frames=(4, 6), size=8)
    bad = root / "train-000001.tar"
    size = bad.stat().st_size
    bad.write_bytes((b"this is not a tar file" * size)[:size])  # unreadable, same size (a changed size: refused)
    loader = build_loader(_cfg(root, image_size=8), "train", _vocab(root), train=True)
    keys = {k for b in loader for k in b["keys"]}
    assert keys == set(_all_keys(root)) - {"train_01_000", "train_01_001"}
    assert loader.skipped == [("train-000001.tar", "bad_shard")]
    with pytest.raises(SchemaError, match=r"train-000001\.tar.*bad_shard"):
        list(build_loader(_cfg(root, image_size=8, strict=True), "train", _vocab(root), train=True))


def test_unknown_glosses_dropped_from_targets_and_counted(tmp_path):
    rng = np.random.default_rng(3)
    train = [toy_sample("t0", rng, num_frames=4, glosses="A B")]
    dev = [toy_sample("d0", rng, num_frames=4, glosses="A NEW B NEW"), toy_sample("d1", rng, num_frames=4, glosses="B")]
    root = write_dataset(tmp_path, {"train": [train], "dev": [dev]})
    loader = build_loader(_cfg(root), "dev", _vocab(root), train=False)
    (b,) = list(loader)
    i = b["keys"].index("d0")
    assert b["glosses"][i] == "A NEW B NEW" and b["targets"][i, :b["target_lengths"][i]].tolist() == [1, 2]
    assert loader.unknown_glosses == {"NEW": 2}


def test_ctc_min_length():
    assert ctc_min_length([]) == 0
    assert ctc_min_length([1, 2, 3]) == 3
    assert ctc_min_length([1, 1, 2, 2, 2, 1]) == 9


# ----------------------------------------------------------------------------------------------------
# augmentation


def _dot_dataset(tmp_path, size=32, n=6):
    """Black videos with one bright 2x2 dot, marked by the nose landmark (index 0)."""
    rng = np.random.default_rng(4)
    samples = []
    for i in range(n):
        t = 6
        x, y = rng.integers(10, 20, size=2)  # inside every crop of area >= 0.5 of a 32 x 32 frame
        frames = np.zeros((t, size, size, 3), np.uint8)
        frames[:, y:y + 2, x:x + 2] = 255
        pose = rng.uniform(0.1, 0.9, (t, NUM_LANDMARKS, 3)).astype(np.float32)
        pose[:, 0, 0], pose[:, 0, 1] = (x + 1) / size, (y + 1) / size  # the dot's centre, normalised
        meta = {"signer": "S", "num_frames": t, "frame_size": [size, size]}
        samples.append(VideoSample(f"dot{i}", "A", meta, jpegs=encode_frames(frames, quality=95), pose=pose))
    return write_dataset(tmp_path, {"train": [samples], "dev": [samples]}, size=size)


def _peak_xy(frame: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre of the bright dot of a (3, S, S) frame, in pixel units."""
    w = frame.float().mean(0)
    w = torch.where(w > w.max() / 2, w, torch.zeros_like(w))
    ys, xs = torch.meshgrid(torch.arange(w.shape[0]) + 0.5, torch.arange(w.shape[1]) + 0.5, indexing="ij")
    return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum()


@pytest.mark.parametrize("train,hflip", [(True, False), (True, True), (False, False)])
def test_pose_follows_the_crop(tmp_path, train, hflip):
    root = _dot_dataset(tmp_path)
    cfg = _cfg(root, crop_scale=(0.5, 0.8), temporal_scale=0.0, pose_jitter=0.0, batch_size=6, image_size=16, hflip=hflip)
    (b,) = _run(cfg, "train" if train else "dev", train=train)
    peaks = []
    for i in range(len(b["keys"])):
        peak, nose = _peak_xy(b["rgb"][i, 0]), b["pose"][i, 0, 0, :2] * 16
        assert torch.allclose(peak, nose, atol=0.5), (b["keys"][i], peak, nose)
        peaks.append(nose)
    if train:  # the crops differ between videos: the offsets of the dot are not all the same
        assert len({(round(float(p[0]), 1), round(float(p[1]), 1)) for p in peaks}) > 1


def test_hflip_mirrors_frames_and_swaps_hands(tmp_path):
    root = _dot_dataset(tmp_path)
    cfg = _cfg(root, temporal_scale=0.0, pose_jitter=0.0, batch_size=6)
    assert DataConfig().hflip is False
    (plain,) = _run(cfg)
    (flipped,) = _run(dataclasses.replace(cfg, hflip=True))
    n_flipped = 0
    for i, key in enumerate(plain["keys"]):
        j = flipped["keys"].index(key)
        a, b = plain["rgb"][i], flipped["rgb"][j]
        if torch.equal(a, b):
            assert torch.equal(plain["pose"][i], flipped["pose"][j])
            continue
        n_flipped += 1
        assert torch.equal(b, a.flip(-1))
        lh, rh = LANDMARK_SLICES["left_hand"], LANDMARK_SLICES["right_hand"]
        assert torch.allclose(flipped["pose"][j][:, lh, 0], 1 - plain["pose"][i][:, rh, 0], atol=1e-6)
        assert torch.allclose(flipped["pose"][j][:, lh, 1], plain["pose"][i][:, rh, 1])
    assert 0 < n_flipped < len(plain["keys"])


def test_temporal_rescale_within_bounds(toy):
    frames = {k: int(n) for b in _run(_cfg(toy), train=False, split="train") for k, n in zip(b["keys"], b["lengths"])}
    out = [(frames[k], int(n)) for b in _run(_cfg(toy, temporal_scale=0.2)) for k, n in zip(b["keys"], b["lengths"])]
    assert all(round(t * 0.8) <= n <= round(t * 1.2) for t, n in out)
    assert any(t != n for t, n in out)
    same = [(frames[k], int(n)) for b in _run(_cfg(toy, temporal_scale=0.0)) for k, n in zip(b["keys"], b["lengths"])]
    assert all(t == n for t, n in same)


def test_pose_jitter_changes_only_coordinates_xy(toy):
    a = _run(_cfg(toy, pose_jitter=0.0))
    b = _run(_cfg(toy, pose_jitter=0.02))
    assert [x["keys"] for x in a] == [x["keys"] for x in b]  # the same draws: only the jitter differs
    pa, pb = a[0]["pose"], b[0]["pose"]
    m = a[0]["mask"]
    assert torch.equal(pa[..., 2].nan_to_num(), pb[..., 2].nan_to_num())
    d = (pa[m][..., :2] - pb[m][..., :2])
    d = d[~d.isnan()]
    assert 0.005 < float(d.abs().mean()) < 0.1
    assert torch.equal(pa.isnan(), pb.isnan())


def test_max_frames_per_batch(tmp_path):
    root = make_toy_dataset(tmp_path, 2, 8, frames=(4, 12), size=8)
    cfg = _cfg(root, batch_size=8, max_frames_per_batch=24, image_size=8, num_workers=2)
    loaders = [build_loader(cfg, "train", _vocab(root), train=True, rank=r, world_size=2) for r in range(2)]
    for ld in loaders:
        batches = list(ld)
        assert len(batches) == len(ld)
        for b in batches:
            assert b["rgb"].shape[0] == 1 or b["rgb"].shape[0] * b["rgb"].shape[1] <= 24
        assert any(b["rgb"].shape[0] > 1 for b in batches)
