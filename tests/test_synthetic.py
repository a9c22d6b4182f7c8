"""Tests of the built-in procedural corpus (cslr/datasets/synthetic/, render.py) at tiny sizes.

    pytest tests/test_synthetic.py -q

Everything renders the `tiny` preset (or a `dataclasses.replace` of it with fewer videos); the PHOENIX-shaped
checks use `plan_corpus` / `corpus_statistics`, which plan sentences and timings without rendering.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cslr.datasets.schema import (
    GLOSS, LANDMARK_SLICES, META, NUM_LANDMARKS, POSE, POSE_LAYOUT, RGB, decode_pose, unpack_jpegs,
)
from cslr.datasets.synthetic import (
    OFF, ON, PRESETS, corpus_statistics, make_sample, plan_corpus, plan_timing, prepare_synthetic,
)
from cslr.datasets.vocab import Vocabulary
from cslr.io import sha256_file
from cslr.datasets.writer import load_manifest

REPO = Path(__file__).resolve().parents[1]
TINY = PRESETS["tiny"]
SPLITS = ("train", "dev", "test")


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """A tar shard -> {key: {member extension: bytes}} (keys have no dots, so the first dot splits)."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples[key][ext] = tar.extractfile(m).read()
    return dict(samples)


def read_split(root: Path, split: str) -> dict[str, dict[str, bytes]]:
    out = {}
    for entry in load_manifest(root)["splits"][split]["shards"]:
        out.update(read_shard(root / entry["name"]))
    return out


def shard_hashes(manifest: dict) -> dict[str, str]:
    return {e["name"]: e["sha256"] for s in manifest["splits"].values() for e in s["shards"]}


def shard_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) per shard: an atomic rewrite changes both, a kept file neither."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.glob("*.tar"))}


def prepare_cmd(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "launch" / "prepare.py"), "synthetic", "--no-progress", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_workers(tiny_data, tmp_path):
    """tiny_data was made with workers=1 and seed 0; two worker processes must give the same shard bytes."""
    m1 = load_manifest(tiny_data)
    m2 = prepare_synthetic(tmp_path, preset="tiny", seed=0, workers=2, progress=False)
    assert shard_hashes(m1) == shard_hashes(m2)
    assert len(shard_hashes(m1)) == 5  # 36 / 16 -> 3 train shards, 1 dev, 1 test
    for name, sha in shard_hashes(m2).items():  # the manifest tells the truth about the files
        assert sha256_file(tmp_path / name) == sha
        assert sha256_file(tiny_data / name) == sha
    assert (tmp_path / "vocab.txt").read_bytes() == (tiny_data / "vocab.txt").read_bytes()


def test_different_seed_different_data(tiny_data, tmp_path):
    m0 = load_manifest(tiny_data)
    m1 = prepare_synthetic(tmp_path, preset="tiny", seed=1, workers=1, progress=False)
    h0, h1 = shard_hashes(m0), shard_hashes(m1)
    assert h0.keys() == h1.keys()
    assert all(h0[n] != h1[n] for n in h0)
    g0 = [s[GLOSS] for s in read_split(tiny_data, "train").values()]
    g1 = [s[GLOSS] for s in read_split(tmp_path, "train").values()]
    assert g0 != g1
    assert m1["config"]["seed"] == 1 and m0["config"]["seed"] == 0


# ----------------------------------------------------------------------------------------------------------
# Layout and schema
# ----------------------------------------------------------------------------------------------------------

def test_manifest_and_vocab(tiny_data):
    m = load_manifest(tiny_data)
    assert m["format"] == "cslr-shards/1" and m["corpus"] == "synthetic-tiny" and m["protocol"] == "phoenix2014"
    assert m["fps"] == 25 and m["frame_size"] == list(TINY.frame_size)
    assert m["modalities"] == ["rgb", "pose"] and m["pose_layout"] == [list(x) for x in POSE_LAYOUT]
    assert set(m["splits"]) == set(SPLITS) and m["skipped"] == {s: [] for s in SPLITS}
    for split in SPLITS:
        info = m["splits"][split]
        assert info["num_samples"] == TINY.num_videos[split] == sum(e["count"] for e in info["shards"])
        assert info["num_frames"] == sum(e["frames"] for e in info["shards"])
        for i, e in enumerate(info["shards"]):
            assert e["name"] == f"{split}-{i:06d}.tar" and (tiny_data / e["name"]).stat().st_size == e["bytes"]
    assert sorted(p.name for p in tiny_data.glob("*.tar")) == sorted(shard_hashes(m))

    train_glosses = {g for s in read_split(tiny_data, "train").values() for g in s[GLOSS].decode().split()}
    lines = (tiny_data / "vocab.txt").read_text("utf-8").splitlines()
    assert lines == sorted(train_glosses)  # exactly the train glosses, sorted
    assert m["vocab_size"] == len(lines) == len(Vocabulary.load(tiny_data / "vocab.txt")) - 1  # blank excluded


def test_every_sample_follows_the_schema(tiny_data):
    m = load_manifest(tiny_data)
    h, w = TINY.frame_size
    seen_missing = False
    for split in SPLITS:
        samples = read_split(tiny_data, split)
        assert len(samples) == TINY.num_videos[split]
        assert sorted(samples) == sorted(k for e in m["splits"][split]["shards"] for k in e["keys"])
        frames = 0
        for key, members in samples.items():
            assert set(members) == {GLOSS, META, POSE, RGB}, key
            meta = json.loads(members[META])
            for field in ("signer", "split", "fps", "num_frames", "corpus", "orig_size", "frame_size"):
                assert field in meta, (key, field)
            assert meta["split"] == split and meta["fps"] == 25 and meta["frame_size"] == [h, w]
            t = meta["num_frames"]
            assert TINY.min_frames <= t <= TINY.max_frames
            pose = decode_pose(members[POSE])
            assert pose.shape == (t, NUM_LANDMARKS, 3) and pose.dtype == np.float16
            jpegs = unpack_jpegs(members[RGB])
            assert len(jpegs) == t
            for jpg in (jpegs[0], jpegs[-1]):
                img = Image.open(io.BytesIO(jpg))
                assert img.format == "JPEG" and img.size == (w, h) and img.mode == "RGB"
            tokens = members[GLOSS].decode().split()
            spans = meta["gloss_spans"]
            assert len(spans) == len(tokens)
            # Idle frames at both ends; spans ordered inside the video.
            assert 0 < spans[0][0] and spans[-1][1] < t
            assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:]))
            seen_missing |= bool(np.isnan(pose).any())
            frames += t
        assert frames == m["splits"][split]["num_frames"]
    assert seen_missing


def test_frames_show_the_signer_moving(tiny_data):
    """Rendered frames are not blank and change over time, with more change where the wrists move."""
    sample = next(iter(read_split(tiny_data, "train").values()))
    video = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB"), np.float32)
                      for j in unpack_jpegs(sample[RGB])])  # (T, H, W, 3)
    assert video.std() > 10  # a picture, not a flat colour
    change = np.abs(np.diff(video, axis=0)).mean((1, 2, 3))  # (T-1,)
    pose = decode_pose(sample[POSE]).astype(np.float32)
    wrist = pose[:, [15, 16], :2]  # pose-model wrists, never NaN
    motion = np.linalg.norm(np.diff(wrist, axis=0), axis=-1).sum(-1)  # (T-1,)
    assert np.corrcoef(change, motion)[0, 1] > 0.3


# ----------------------------------------------------------------------------------------------------------
# PHOENIX-likeness
# ----------------------------------------------------------------------------------------------------------

def test_prefixed_glosses_and_on_off_framing():
    for name in ("small", "phoenix"):
        corpus = plan_corpus(PRESETS[name], seed=0)
        sentences = [s.tokens for split in SPLITS for s in corpus.samples[split]]
        tokens = [t for s in sentences for t in s]
        assert any(t.startswith("loc-") for t in tokens), name
        assert any(t.startswith("cl-") for t in tokens), name
        # __ON__ / __OFF__ only at the ends, in some sentences but not all.
        assert all(ON not in s[1:] and OFF not in s[:-1] for s in sentences), name
        on = np.mean([s[0] == ON for s in sentences])
        off = np.mean([s[-1] == OFF for s in sentences])
        assert 0.2 < on < 0.8 and 0.2 < off < 0.8, (name, on, off)


def test_hands_missing_as_whole_hands_in_some_frames(tiny_data):
    missing_frames = total_frames = 0
    for split in SPLITS:
        for key, members in read_split(tiny_data, split).items():
            pose = decode_pose(members[POSE])
            for part in ("pose", "face"):
                assert not np.isnan(pose[:, LANDMARK_SLICES[part]]).any(), (key, part)
            for part in ("left_hand", "right_hand"):
                nan = np.isnan(pose[:, LANDMARK_SLICES[part]])  # (T, 21, 3)
                frame_missing = nan.all((1, 2))
                assert (frame_missing == nan.any((1, 2))).all(), (key, part)  # all 21 points or none
                missing_frames += int(frame_missing.sum())
                total_frames += len(frame_missing)
            assert np.isfinite(pose).any()
    rate = missing_frames / total_frames
    assert 0.1 < rate < 0.6, rate  # tiny: tracking lost in 10 % of signing frames x signer x motion, plus hands at rest


def test_same_gloss_lasts_different_frames(tiny_data):
    """Observed in the rendered data: a gloss's span length differs between its instances."""
    lengths = defaultdict(list)
    for members in read_split(tiny_data, "train").values():
        spans = json.loads(members[META])["gloss_spans"]
        for tok, (a, b) in zip(members[GLOSS].decode().split(), spans):
            lengths[tok].append(b - a)
    frequent = [g for g, v in lengths.items() if len(v) >= 5]
    assert frequent
    for g in frequent:
        assert max(lengths[g]) > min(lengths[g]), (g, lengths[g])


def test_per_instance_speed_about_30_percent():
    preset = PRESETS["small"]
    corpus = plan_corpus(preset, seed=0, num_videos={"train": 400, "dev": 0, "test": 0})
    factors, durations = [], defaultdict(list)
    for spec in corpus.samples["train"]:
        timing, num_frames = plan_timing(spec, corpus, np.random.default_rng(list(spec.seed)))
        factors.append(timing.speed / corpus.signers[spec.signer].speed)
        for tok, (_, d) in zip(spec.tokens, timing.steps):
            durations[tok].append(d)
    v = preset.speed_variation
    factors = np.array(factors)
    assert (factors >= 1 - v - 1e-9).all() and (factors <= 1 + v + 1e-9).all()
    assert factors.min() < 1 - 0.8 * v and factors.max() > 1 + 0.8 * v  # the whole +-30% range is used
    # The same gloss: durations spread roughly like 1 / speed (max / min well above 1).
    common = sorted(durations, key=lambda g: -len(durations[g]))[:5]
    for g in common:
        d = np.array(durations[g])
        assert len(d) >= 20 and d.max() / d.min() >= 1.4, (g, sorted(set(d)))
    # Signers differ in speed too.
    speeds = [s.speed for s in corpus.signers]
    assert max(speeds) - min(speeds) > 0.02


def test_held_out_signer_only_in_dev_and_test(tmp_path):
    corpus = plan_corpus(TINY, seed=0, held_out_signer=2)
    who = {split: {s.signer for s in corpus.samples[split]} for split in SPLITS}
    assert 1 not in who["train"] and 1 in who["dev"] and 1 in who["test"]
    assert who["train"] == {0, 2}
    # Without the option every signer trains.
    assert {s.signer for s in plan_corpus(TINY, seed=0).samples["train"]} == {0, 1, 2}

    small = replace(TINY, num_videos={"train": 8, "dev": 3, "test": 3})
    m = prepare_synthetic(tmp_path, preset=small, seed=0, workers=1, held_out_signer=2, progress=False)
    assert m["config"]["held_out_signer"] == 2
    signers = {split: {json.loads(s[META])["signer"] for s in read_split(tmp_path, split).values()}
               for split in SPLITS}
    assert "Signer02" not in signers["train"]
    assert signers["dev"] == signers["test"] == {"Signer01", "Signer02", "Signer03"}
    with pytest.raises(ValueError, match="held-out-signer 4"):
        plan_corpus(TINY, seed=0, held_out_signer=4)


def test_phoenix_preset_matches_phoenix2014_statistics():
    p = PRESETS["phoenix"]
    assert p.frame_size == (260, 210) and p.num_signers == 9
    stats = corpus_statistics("phoenix", seed=0)
    assert {s: stats[s]["videos"] for s in SPLITS} == {"train": 5672, "dev": 540, "test": 629}
    train = stats["train"]
    assert abs(train["frames_mean"] - 141) < 5, train
    assert 27 <= train["frames_min"] <= 35 and 270 <= train["frames_max"] <= 299, train
    for split in ("dev", "test"):
        assert 27 <= stats[split]["frames_min"] and stats[split]["frames_max"] <= 299
        assert abs(stats[split]["frames_mean"] - 141) < 10 and abs(stats[split]["glosses_mean"] - 11.5) < 1
    assert abs(train["glosses_mean"] - 11.5) < 0.6, train
    assert abs(train["distinct_glosses"] - 1230) <= 60, train
    assert abs(train["on_share"] - 0.43) < 0.06 and abs(train["off_share"] - 0.46) < 0.06, train
    # All 9 signers are in train (unbalanced, like PHOENIX), and in dev/test.
    corpus = plan_corpus(p, seed=0)
    counts = np.bincount([s.signer for s in corpus.samples["train"]], minlength=9)
    assert (counts > 0).all() and counts.max() > 1.5 * counts.min()
    assert {s.signer for s in corpus.samples["dev"]} == set(range(9))


def test_statistics_agree_with_the_rendered_corpus(tiny_data):
    """corpus_statistics (no rendering) predicts the frame and gloss counts of the real prepared data."""
    stats = corpus_statistics("tiny", seed=0)
    m = load_manifest(tiny_data)
    for split in SPLITS:
        samples = read_split(tiny_data, split).values()
        frames = [json.loads(s[META])["num_frames"] for s in samples]
        glosses = [len(s[GLOSS].split()) for s in samples]
        assert stats[split]["videos"] == len(frames)
        assert stats[split]["frames_mean"] * len(frames) == pytest.approx(m["splits"][split]["num_frames"])
        assert (stats[split]["frames_min"], stats[split]["frames_max"]) == (min(frames), max(frames))
        assert stats[split]["glosses_mean"] == pytest.approx(np.mean(glosses))


# ----------------------------------------------------------------------------------------------------------
# Learnable, not trivial
# ----------------------------------------------------------------------------------------------------------

def _instance_features(preset, seed: int, n: int) -> list[tuple[str, int, np.ndarray]]:
    """(gloss, signer, feature) per gloss instance of n train videos, from the observed (noisy, NaN) poses.

    Feature: each hand's wrist in thirds of the gloss span (relative to the shoulder centre, in shoulder
    widths) and its mean finger configuration (relative to the wrist): a trajectory x hand-shape signature.
    """
    corpus = plan_corpus(replace(preset, num_videos={"train": n, "dev": 0, "test": 0}), seed)
    out = []
    for spec in corpus.samples["train"]:
        sample = make_sample(spec, corpus, render=False)
        pose = sample.pose.astype(np.float32)[..., :2]  # (T, 543, 2)
        shoulders = pose[:, [11, 12]]
        centre = shoulders.mean(1)  # (T, 2)
        width = np.linalg.norm(shoulders[:, 0] - shoulders[:, 1], axis=-1).mean()
        for tok, (a, b) in zip(spec.tokens, sample.meta["gloss_spans"]):
            if tok.startswith("__"):
                continue
            parts = []
            for hand in ("left_hand", "right_hand"):
                pts = pose[a:b, LANDMARK_SLICES[hand]]  # (n, 21, 2)
                wrist = (pts[:, 0] - centre[a:b]) / width  # (n, 2)
                parts += [np.nanmean(c, 0) for c in np.array_split(wrist, 3)]
                parts.append(np.nanmean((pts - pts[:, :1]) / width, 0).ravel())
            out.append((tok, spec.signer, np.concatenate(parts)))
    return out


def _dist(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((x - y) ** 2)))  # NaN dims: a hand missing during a whole third


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_gloss_signature_consistent_across_instances_and_signers():
    feats = _instance_features(TINY, seed=0, n=60)
    within_other_signer, between = [], []
    for i, (g, s, x) in enumerate(feats):
        for h, r, y in feats[i + 1:]:
            if g == h and s != r:
                within_other_signer.append(_dist(x, y))
            elif g != h:
                between.append(_dist(x, y))
    within, between = np.nanmean(within_other_signer), np.nanmean(between)
    assert len(within_other_signer) > 50
    assert within < 0.4 * between, (within, between)  # the same gloss by another signer looks alike ...
    assert within > 0.05 * between, (within, between)  # ... but no instance is a copy of another

    # Leave-one-out nearest gloss centroid: far above chance (1 / 10 glosses).
    names = sorted({g for g, _, _ in feats})
    correct = 0
    for i, (g, _, x) in enumerate(feats):
        cents = {h: np.nanmean([y for j, (k, _, y) in enumerate(feats) if k == h and j != i], 0) for h in names}
        correct += min(names, key=lambda h: _dist(x, cents[h])) == g
    assert correct / len(feats) > 0.8


def test_inventory_needs_both_trajectory_and_hand_shape():
    """Not trivial: some glosses share a trajectory (differ only in hand shape) and some share a hand shape."""
    for name in ("tiny", "small"):
        corpus = plan_corpus(PRESETS[name], seed=0)
        signs = [s for n, s in corpus.signs.items() if not n.startswith("__")]
        assert len(signs) == PRESETS[name].vocab_size
        by_traj, by_shape = defaultdict(set), defaultdict(set)
        for s in signs:
            by_traj[s.trajectory].add(s.shape)
            by_shape[s.shape].add(s.trajectory)
        assert len({(s.trajectory, s.shape) for s in signs}) == len(signs)  # every gloss distinct
        assert any(len(v) > 1 for v in by_traj.values()) and any(len(v) > 1 for v in by_shape.values())


# ----------------------------------------------------------------------------------------------------------
# The CLI
# ----------------------------------------------------------------------------------------------------------

def test_cli_prepares_and_reuses_a_finished_folder(tmp_path):
    out = tmp_path / "synth"
    first = prepare_cmd("--preset", "tiny", "--out", str(out), "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert "synthetic-tiny" in first.stdout
    m = load_manifest(out)
    assert m["config"]["seed"] == 3 and m["splits"]["train"]["num_samples"] == TINY.num_videos["train"]
    assert not (out / ".synthetic-progress.json").exists()
    stamps = shard_stamps(out)
    assert len(stamps) == 5

    again = prepare_cmd("--preset", "tiny", "--out", str(out), "--seed", "3", "--preview", str(tmp_path / "p.png"))
    assert again.returncode == 0, again.stderr
    assert shard_stamps(out) == stamps  # nothing rewritten
    assert load_manifest(out) == m
    # the contact sheet: the first train video's frames, 12 per row, at the preset's frame size
    first_train = next(iter(read_split(out, "train").values()))
    n = len(unpack_jpegs(first_train[RGB]))
    h, w = TINY.frame_size
    assert Image.open(tmp_path / "p.png").size == (w * 12, h * ((n + 11) // 12))


def test_rerun_regenerates_only_damaged_shards_and_changed_configs(tmp_path):
    m = prepare_synthetic(tmp_path, preset="tiny", seed=3, workers=1, progress=False)
    stamps = shard_stamps(tmp_path)
    with open(tmp_path / "train-000001.tar", "r+b") as f:  # same size, different bytes
        f.seek(600)
        f.write(b"garbage")
    assert prepare_synthetic(tmp_path, preset="tiny", seed=3, workers=1, progress=False) == m
    after = shard_stamps(tmp_path)
    assert [n for n in stamps if after[n] != stamps[n]] == ["train-000001.tar"]
    assert sha256_file(tmp_path / "train-000001.tar") == shard_hashes(m)["train-000001.tar"]

    # Another seed in the same folder: nothing is reused.
    m4 = prepare_synthetic(tmp_path, preset="tiny", seed=4, workers=1, progress=False)
    assert all(shard_stamps(tmp_path)[n] != after[n] for n in after)
    assert all(sha256_file(tmp_path / n) == h for n, h in shard_hashes(m4).items())


def test_cli_bad_arguments_fail_clearly(tmp_path):
    bad = prepare_cmd("--preset", "huge", "--out", str(tmp_path / "a"))
    assert bad.returncode != 0
    assert "huge" in bad.stderr and "tiny" in bad.stderr  # argparse names the choices
    assert not (tmp_path / "a" / "manifest.json").exists()

    bad = prepare_cmd("--preset", "tiny", "--out", str(tmp_path / "b"), "--held-out-signer", "7")
    assert bad.returncode == 1
    assert "error:" in bad.stderr and "held-out-signer 7" in bad.stderr and "1..3" in bad.stderr
    assert not (tmp_path / "b" / "manifest.json").exists()

    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'.*tiny"):
        prepare_synthetic(tmp_path / "c", preset="huge")
