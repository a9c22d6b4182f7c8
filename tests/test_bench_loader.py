"""Tests of the loader benchmark (cslr/bench/loader.py), the PHOENIX exporter it uses and the pipeline's clip resize.

    pytest tests/test_bench_loader.py -q
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cslr.bench import loader as bench
from cslr.bench.context import BenchContext
from cslr.datasets import augment
from cslr.datasets.phoenix import convert, export_phoenix2014
from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.shards import iter_shard
from cslr.datasets.schema import decode_pose, unpack_jpegs
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest


def _samples(data_dir, split: str) -> dict:
    return {s["__key__"]: s for sh in load_manifest(data_dir)["splits"][split]["shards"]
            for s in iter_shard(data_dir / sh["name"])}


def _frames(sample) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(bytes(j))).convert("RGB"), dtype=np.float32)
                     for j in unpack_jpegs(sample["rgb.jpgs"])])  # (T, H, W, 3)


def test_export_then_convert_gives_back_the_corpus(tiny_data, tmp_path):
    corpus = export_phoenix2014(tiny_data, tmp_path / "phoenix2014-release", pose_dir=tmp_path / "poses")
    header = (corpus / "annotations/manual/dev.corpus.csv").read_text().splitlines()[0]
    assert header == "id|folder|signer|annotation"
    out = tmp_path / "shards"
    manifest = convert("phoenix2014", tmp_path / "phoenix2014-release", out, pose_dir=tmp_path / "poses",
                       workers=1, progress=False)
    original = load_manifest(tiny_data)
    assert (out / "vocab.txt").read_text() == (tiny_data / "vocab.txt").read_text()
    for split in ("train", "dev", "test"):
        assert manifest["splits"][split]["num_frames"] == original["splits"][split]["num_frames"]
        before, after = _samples(tiny_data, split), _samples(out, split)
        assert sorted(before) == sorted(after) and not manifest["skipped"][split]
        for key in list(before)[:4]:
            a, b = before[key], after[key]
            assert a["gloss.txt"] == b["gloss.txt"]
            assert json.loads(a["meta.json"])["signer"] == json.loads(b["meta.json"])["signer"]
            fa, fb = _frames(a), _frames(b)  # b went JPEG -> PNG -> JPEG: one more lossy step
            assert fa.shape == fb.shape and np.abs(fa - fb).mean() < 3
            np.testing.assert_array_equal(decode_pose(a["pose.npy"]), decode_pose(b["pose.npy"]))


def test_crop_resize_hwc_matches_crop_resize():
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (5, 3, 30, 22), dtype=torch.uint8, generator=g)  # (T, 3, H, W)
    frames = [f.permute(1, 2, 0).contiguous() for f in clip]  # T x (H, W, 3), as a decoder returns them
    for box, size, flip in [((3, 2, 17), 24, False), ((0, 0, 22), 12, True), ((8, 0, 22), 22, False)]:
        want = augment.crop_resize(clip, box, size, flip)
        got = augment.crop_resize_hwc(frames, box, size, flip)
        assert got.shape == (5, 3, size, size) and torch.equal(got, want)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six `tiny` synthetic videos exported to the PHOENIX layout and converted, by the benchmark's own code."""
    return bench.prepare_data(tmp_path_factory.mktemp("loader"), 6, preset="tiny", workers=1, png_compress_level=1)


def _cfg(data, **kw) -> DataConfig:
    return DataConfig(**{**dict(data=str(data.shards), batch_size=2, num_workers=0, image_size=24, pin_memory=False),
                         **kw})


def test_png_dataset_delivers_the_shard_pipelines_videos(data):
    """Augmentation off (eval: centre crop, all frames): same keys, frame counts, shapes, close pixels and pose."""
    cfg = _cfg(data)
    shard_rows = {}
    for batch in build_loader(cfg, "train", Vocabulary.load(data.shards / "vocab.txt"), train=False):
        for i, key in enumerate(batch["keys"]):
            n = int(batch["lengths"][i])
            shard_rows[key] = (batch["rgb"][i, :n], batch["pose"][i, :n])
    png_rows = {}
    for batch in bench.png_loader(bench.PngVideoDataset(data.release, "train", data.poses, cfg, train=False), cfg,
                                  shuffle=False):
        assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape[2:] == (3, 24, 24)
        for i, key in enumerate(batch["keys"]):
            n = int(batch["lengths"][i])
            assert not batch["rgb"][i, n:].any() and not batch["pose"][i, n:].any()  # zero padding
            png_rows[key] = (batch["rgb"][i, :n], batch["pose"][i, :n])
    assert sorted(png_rows) == sorted(shard_rows) and len(png_rows) == 6
    for key, (rgb, pose) in png_rows.items():
        rgb_s, pose_s = shard_rows[key]
        assert rgb.shape == rgb_s.shape and pose.shape == pose_s.shape
        diff = (rgb.float() - rgb_s.float()).abs()
        assert diff.mean() < 2, (key, float(diff.mean()))  # JPEG q90 vs lossless PNG, PIL vs torch resize (a
        # one-frame shift gives ~4)
        torch.testing.assert_close(pose, pose_s, atol=2e-3, rtol=0, equal_nan=True)  # float16 in the shards


def test_png_dataset_train_augmentation_is_the_pipelines(data):
    """Train: the item follows `augment.draw_params` of its (seed, epoch, index) generator."""
    cfg = _cfg(data, temporal_scale=0.3)
    dataset = bench.PngVideoDataset(data.release, "train", data.poses, cfg, train=True)
    for epoch in (0, 1):
        dataset.epoch = epoch
        for i in range(len(dataset)):
            item = dataset[i]
            t = len(list((dataset.frames_dir / item["key"] / "1").glob("*.png")))
            p = augment.draw_params(np.random.default_rng([cfg.seed, epoch, i]), t, train=True, temporal_scale=0.3)
            assert item["rgb"].shape == (p.num_frames_out, 3, 24, 24)
            assert item["pose"].shape[:2] == (p.num_frames_out, 543)
    a, b = dataset[0]["rgb"], dataset[0]["rgb"]
    assert torch.equal(a, b)  # deterministic per (epoch, index)


def test_measure_passes_counts_every_video(data):
    cfg = _cfg(data, num_workers=1)
    r = bench.measure_passes(bench.png_passes(data, cfg), repeats=1, warmup=0)
    frames = sum(len(list(p.glob("*.png"))) for p in (data.release.rglob("1")))
    assert r["videos_per_pass"] == 6 and r["videos_per_s"]["n"] == 1
    assert 0.6 * frames <= r["frames_per_pass"] <= 1.4 * frames  # temporal rescale within U(0.8, 1.2)


def test_steady_rate_leaves_out_the_wait_for_the_first_batch():
    def start(_):
        def gen():
            time.sleep(0.3)  # worker start-up
            for _ in range(4):
                yield {"lengths": torch.tensor([10, 10])}
        return gen()
    r = bench.measure_passes(start, repeats=1, warmup=0)
    assert r["videos_per_pass"] == 8 and r["first_batch_s"]["median"] >= 0.3
    assert r["videos_per_s"]["median"] <= 8 / 0.3  # the whole pass counts the start-up
    assert r["steady_videos_per_s"]["median"] > 100 * r["videos_per_s"]["median"]  # 6 videos right after it


def test_run_quick(tmp_path):
    ctx = BenchContext(out=tmp_path / "out", work=tmp_path / "work", quick=True, repeats=1, workers=1)
    res = bench.run(ctx)
    assert res.summary["speedup_vs_png"] > 0 and res.summary["speedup_vs_png_with_startup"] > 0
    for pipe in ("shards", "png"):
        assert res.figures[pipe]["videos_per_s"]["n"] == 1 and res.figures[pipe]["videos_per_pass"] > 0
        assert res.figures[pipe]["steady_videos_per_s"]["median"] > 0
        assert res.figures["per_frame_ms"][pipe]["decode_ms"] > 0
    assert res.markdown.startswith("## loader") and "5x" in res.markdown
    assert res.plots == ["loader.png"] and (ctx.out / "loader.png").stat().st_size > 0
