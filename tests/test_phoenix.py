"""PHOENIX converters (cslr/datasets/phoenix.py) on generated trees in the official layouts.

    pytest tests/test_phoenix.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from cslr.datasets import phoenix
from cslr.datasets.phoenix import ConversionError, convert
from cslr.datasets.schema import NUM_LANDMARKS, POSE_LAYOUT, decode_pose, unpack_jpegs
from cslr.datasets.vocab import Vocabulary
from phoenix_fixtures import RELEASE, SIZE, Video, build_tree, decode_gray, frame_value, read_shard, write_poses

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "phoenix2014"


def small_corpus() -> dict[str, list]:
    """A few videos per split with the real quirks: double spaces, un-padded and 2014-style frame names, a
    missing folder, an empty folder and a malformed row."""
    return {
        "train": [
            Video("01April_2010_Thursday_heute_default-0", "__ON__ LIEB  ZUSCHAUER ABEND", "Signer04", 5),
            Video("v-unpadded", "loc-NORD REGEN  REGEN", "Signer01", 12, naming="unpadded"),
            Video("v-missing", "SONNE WIND", folder="missing"),
            Video("v-2014names", "MORGEN  SONNE __OFF__", "Signer05", 11, naming="phoenix"),
        ],
        "dev": [Video("d-0", "REGEN WIND", num_frames=7), Video("d-empty", "KALT", folder="empty")],
        "test": [Video("t-0", "SONNE", num_frames=8), "t-bad|t-bad/1/*.png|Signer01", Video("t-1", "NORD  KALT")],
    }


def videos_of(tree: dict, split: str) -> list[Video]:
    return [v for v in tree[split] if isinstance(v, Video)]


def load_split(out: Path, manifest: dict, split: str) -> dict[str, dict[str, bytes]]:
    samples = {}
    for entry in manifest["splits"][split]["shards"]:
        samples.update(read_shard(out / entry["name"]))
    return samples


def make(tmp_path: Path, kind: str = "phoenix2014", tree: dict | None = None) -> tuple[Path, dict]:
    tree = tree or small_corpus()
    release = tmp_path / RELEASE[kind]
    build_tree(release, kind, tree)
    return release, tree


def test_convert_official_layout(tmp_path, capsys):
    release, tree = make(tmp_path)
    out = tmp_path / "out"
    manifest = convert("phoenix2014", release, out, workers=1, shard_size=2, progress=False)

    assert manifest["format"] == "cslr-shards/1" and manifest["protocol"] == "phoenix2014"
    assert manifest["modalities"] == ["rgb"] and manifest["pose_layout"] is None
    assert manifest["frame_size"] == list(SIZE)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for split in ("train", "dev", "test"):
        expected = [v for v in videos_of(tree, split) if v.folder == "ok"]
        samples = load_split(out, manifest, split)
        assert list(samples) == [v.id for v in expected]  # CSV order
        info = manifest["splits"][split]
        assert info["num_samples"] == len(expected)
        assert info["num_frames"] == sum(v.num_frames for v in expected)
        for entry in info["shards"]:
            data = (out / entry["name"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        for v in expected:
            s = samples[v.id]
            assert s["gloss.txt"].decode() == " ".join(v.annotation.split())
            assert "  " not in s["gloss.txt"].decode()
            meta = json.loads(s["meta.json"])
            assert meta == {"signer": v.signer, "split": split, "fps": 25, "num_frames": v.num_frames,
                            "corpus": "phoenix2014", "orig_size": list(SIZE), "frame_size": list(SIZE)}
            jpegs = unpack_jpegs(s["rgb.jpgs"])
            grays = [decode_gray(j) for j in jpegs]
            assert np.allclose(grays, [frame_value(i) for i in range(v.num_frames)], atol=3), (v.id, grays)
            assert "pose.npy" not in s

    skipped = {split: {s["id"]: s["reason"] for s in manifest["skipped"][split]} for split in manifest["skipped"]}
    assert list(skipped["train"]) == ["v-missing"] and "missing frame folder" in skipped["train"]["v-missing"]
    assert list(skipped["dev"]) == ["d-empty"] and "empty frame folder" in skipped["dev"]["d-empty"]
    (bad_id, reason), = skipped["test"].items()
    assert bad_id == "test.corpus.csv:3" and "test.corpus.csv:3" in reason and "3 fields, expected 4" in reason

    # Vocabulary: every gloss of the train CSV, sorted.
    train_glosses = sorted({g for v in videos_of(tree, "train") for g in v.annotation.split()})
    assert Vocabulary.load(out / "vocab.txt").glosses == train_glosses
    assert manifest["vocab_size"] == len(train_glosses)

    printed = capsys.readouterr().out
    for key in ("v-missing", "d-empty", "test.corpus.csv:3", "3 skipped", "videos/s"):
        assert key in printed


def test_frame_size_resizes_and_keeps_original_size(tmp_path):
    release, tree = make(tmp_path)
    manifest = convert("phoenix2014", release, tmp_path / "out", workers=1, frame_size=(16, 12), splits=("dev",),
                       progress=False)
    assert manifest["frame_size"] == [16, 12] and list(manifest["splits"]) == ["dev"]
    s = load_split(tmp_path / "out", manifest, "dev")["d-0"]
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(bytes(unpack_jpegs(s["rgb.jpgs"])[0]))).size == (12, 16)  # (W, H)
    meta = json.loads(s["meta.json"])
    assert meta["orig_size"] == list(SIZE) and meta["frame_size"] == [16, 12]


def test_root_may_be_the_corpus_folder(tmp_path):
    release, _ = make(tmp_path)
    a = convert("phoenix2014", release, tmp_path / "a", workers=1, progress=False)
    b = convert("phoenix2014", release / "phoenix-2014-multisigner", tmp_path / "b", workers=1, progress=False)
    assert a["splits"] == b["splits"] and a["skipped"] == b["skipped"]
    with pytest.raises(ConversionError, match="phoenix-2014-multisigner"):
        convert("phoenix2014", tmp_path / "nowhere", tmp_path / "c", progress=False)


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "no_gloss", "bad_png"])
def test_strict_names_the_row(tmp_path, case):
    tree = {"train": [Video("a", "X Y")], "dev": [Video("b", "X")], "test": [Video("c", "Y")]}
    if case in ("missing", "empty"):
        tree["dev"].append(Video("bad-video", "X", folder=case))
    elif case == "malformed":
        tree["dev"].append("bad-video|x|y|z|w")
    elif case == "no_gloss":
        tree["dev"].append(Video("bad-video", "  "))
    release, _ = make(tmp_path, tree=tree)
    if case == "bad_png":
        png = release / "phoenix-2014-multisigner/features/fullFrame-210x260px/dev/b/1/images0003.png"
        png.write_bytes(png.read_bytes()[:40])  # truncated
    with pytest.raises(ConversionError) as err:
        convert("phoenix2014", release, tmp_path / "out", workers=1, strict=True, progress=False)
    msg = str(err.value)
    assert f"dev.corpus.csv:{2 if case == 'bad_png' else 3}" in msg  # file and line of the row
    if case == "bad_png":
        assert "images0003.png" in msg and "unreadable frame" in msg
    elif case != "malformed":
        assert "bad-video" in msg
    # Without --strict: skipped, counted, the others converted.
    manifest = convert("phoenix2014", release, tmp_path / "lenient", workers=1, progress=False)
    assert len(manifest["skipped"]["dev"]) == 1
    assert manifest["splits"]["dev"]["num_samples"] == (0 if case == "bad_png" else 1)
    if case == "bad_png":
        assert "images0003.png" in manifest["skipped"]["dev"][0]["reason"]


def test_key_with_dot_is_an_error(tmp_path):
    release, _ = make(tmp_path, tree={"train": [Video("a.b", "X")], "dev": [], "test": []})
    with pytest.raises(ConversionError, match=r"train.corpus.csv:2.*'a\.b'"):
        convert("phoenix2014", release, tmp_path / "out", workers=1, progress=False)


def test_pose_mediapipe_and_custom_layouts(tmp_path):
    release, tree = make(tmp_path)
    for layout, (k, c) in {"mediapipe": (NUM_LANDMARKS, 3), "custom": (10, 2)}.items():
        poses = {}
        for split in ("train", "dev", "test"):
            poses.update(write_poses(tmp_path / layout, split, videos_of(tree, split), k, c))
        out = tmp_path / f"out-{layout}"
        manifest = convert("phoenix2014", release, out, pose_dir=tmp_path / layout, workers=1, progress=False)
        expected = [list(p) for p in POSE_LAYOUT] if layout == "mediapipe" else [["custom", 10]]
        assert manifest["modalities"] == ["rgb", "pose"] and manifest["pose_layout"] == expected
        for split in ("train", "dev", "test"):
            for key, s in load_split(out, manifest, split).items():
                pose = decode_pose(s["pose.npy"])
                assert pose.dtype == np.float16 and pose.shape == poses[key].shape
                np.testing.assert_array_equal(pose, poses[key].astype(np.float16))  # NaN == NaN here
                assert json.loads(s["meta.json"])["pose_layout"] == expected


def test_pose_missing_file_skipped_and_count_mismatch_error(tmp_path):
    release, tree = make(tmp_path)
    for split in ("train", "dev", "test"):
        write_poses(tmp_path / "pose", split, videos_of(tree, split))
    (tmp_path / "pose/dev/d-0.npy").unlink()
    manifest = convert("phoenix2014", release, tmp_path / "out", pose_dir=tmp_path / "pose", workers=1,
                       progress=False)
    assert "missing pose file" in manifest["skipped"]["dev"][0]["reason"]
    assert manifest["splits"]["dev"]["num_samples"] == 0

    v = videos_of(tree, "test")[0]
    write_poses(tmp_path / "pose", "test", [v], extra_frames=3)
    with pytest.raises(ConversionError) as err:  # an error even without --strict
        convert("phoenix2014", release, tmp_path / "out2", pose_dir=tmp_path / "pose", workers=1, progress=False)
    msg = str(err.value)
    assert v.id in msg and f"has {v.num_frames + 3} frames" in msg and f"has {v.num_frames} PNGs" in msg


def shard_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.tar"))}


def test_resume_rewrites_only_missing_shards(tmp_path):
    release, _ = make(tmp_path)
    out = tmp_path / "out"
    first = convert("phoenix2014", release, out, workers=1, shard_size=1, progress=False)
    manifest_bytes = (out / "manifest.json").read_bytes()
    old = 1_000_000_000 * 10**9  # an mtime in 2001: anything rewritten gets a newer one
    for p in out.glob("*.tar"):
        os.utime(p, ns=(old, old))

    (out / "train-000001.tar").unlink()
    (out / ".train-000001.tar.tmp-999").write_bytes(b"partial")  # an interrupted write: not a shard
    (out / ".convert" / "dev-000000.json").unlink()  # shard written, sidecar not yet: redone
    second = convert("phoenix2014", release, out, workers=1, shard_size=1, progress=False)

    assert second == first and (out / "manifest.json").read_bytes() == manifest_bytes
    rewritten = {name for name, t in shard_mtimes(out).items() if t != old}
    assert rewritten == {"train-000001.tar", "dev-000000.tar"}
    assert not list(out.glob(".*.tmp-*"))

    # A rerun with nothing missing rewrites nothing; other settings are refused, not mixed in.
    for p in out.glob("*.tar"):
        os.utime(p, ns=(old, old))
    assert convert("phoenix2014", release, out, workers=1, shard_size=1, progress=False) == first
    assert all(t == old for t in shard_mtimes(out).values())
    with pytest.raises(ConversionError, match="other settings"):
        convert("phoenix2014", release, out, workers=1, shard_size=1, jpeg_quality=50, progress=False)


def test_process_pool_matches_serial(tmp_path):
    release, _ = make(tmp_path)
    serial = convert("phoenix2014", release, tmp_path / "serial", workers=1, shard_size=1, progress=False)
    pooled = convert("phoenix2014", release, tmp_path / "pooled", workers=2, shard_size=1, progress=True)
    assert pooled == serial  # byte-identical shards (same sha256), same order
    for entry in serial["splits"]["train"]["shards"]:
        assert (tmp_path / "serial" / entry["name"]).read_bytes() == (tmp_path / "pooled" / entry["name"]).read_bytes()


def test_cli(tmp_path, capsys):
    release, _ = make(tmp_path)
    parser = argparse.ArgumentParser()
    phoenix.add_cli(parser.add_subparsers(dest="corpus", required=True))
    args = parser.parse_args(["phoenix2014", "--root", str(release), "--out", str(tmp_path / "out"), "--workers", "1",
                              "--frame-size", "20", "14", "--shard-size", "3", "--splits", "train,dev",
                              "--no-progress"])
    assert args.func(args) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["frame_size"] == [20, 14] and set(manifest["splits"]) == {"train", "dev"}
    assert manifest["config"]["shard_size"] == 3
    args = parser.parse_args(["phoenix2014", "--root", str(release), "--out", str(tmp_path / "o2"), "--strict",
                              "--workers", "1", "--no-progress"])
    assert args.func(args) == 1
    assert "error:" in capsys.readouterr().err


def test_frame_sort_key_is_numeric():
    rng = random.Random(0)
    numbers = rng.sample(range(1, 3000), 200)
    names = [f"images{n:0{rng.randint(1, 5)}d}.png" for n in numbers]
    assert [int(n[6:-4]) for n in sorted(names, key=phoenix.frame_sort_key)] == sorted(numbers)
    names = [f"x-1.avi_pid0_fn{n:06d}-0.png" for n in numbers]
    assert sorted(names, key=phoenix.frame_sort_key) == sorted(names)  # padded: lexicographic order is right


def test_phoenix2014T_layout(tmp_path):
    tree = {"train": [Video("11August_2010_Wednesday_tagesschau-2", "JETZT  WETTER MORGEN", "Signer08", 6,
                            translation='und nun die "wettervorhersage" für morgen')],
            "dev": [Video("dev-0", "REGEN", num_frames=5, naming="unpadded", translation="regen")],
            "test": [Video("test-0", "SONNE  WARM", translation="sonnig")]}
    release, _ = make(tmp_path, "phoenix2014T", tree)
    for root in (release, release / "PHOENIX-2014-T"):
        out = tmp_path / f"out-{root.name}"
        manifest = convert("phoenix2014T", root, out, workers=1, progress=False)
        assert manifest["protocol"] == "phoenix2014T" and manifest["corpus"] == "phoenix2014T"
        for split, videos in tree.items():
            samples = load_split(out, manifest, split)
            assert list(samples) == [v.id for v in videos]
            for v in videos:
                meta = json.loads(samples[v.id]["meta.json"])
                assert meta["translation"] == v.translation and meta["signer"] == v.signer
                assert samples[v.id]["gloss.txt"].decode() == " ".join(v.annotation.split())
                grays = [decode_gray(j) for j in unpack_jpegs(samples[v.id]["rgb.jpgs"])]
                assert np.allclose(grays, [frame_value(i) for i in range(v.num_frames)], atol=3)
        assert Vocabulary.load(out / "vocab.txt").glosses == ["JETZT", "MORGEN", "WETTER"]


def test_phoenix2014_si5_layout(tmp_path):
    tree = {"train": [Video("s-0", "A B"), Video("s-1", "B  C", "Signer05")], "dev": [Video("s-2", "A")],
            "test": [Video("s-3", "C")]}
    release, _ = make(tmp_path, "phoenix2014-si5", tree)
    manifest = convert("phoenix2014-si5", release, tmp_path / "out", workers=1, progress=False)
    assert manifest["corpus"] == "phoenix2014-si5" and manifest["protocol"] == "phoenix2014"
    assert {s: manifest["splits"][s]["num_samples"] for s in tree} == {"train": 2, "dev": 1, "test": 1}
    # The multi-signer converter does not read the SI5 files.
    with pytest.raises(ConversionError):
        convert("phoenix2014", release, tmp_path / "out2", workers=1, progress=False)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} not present")
def test_real_annotations(tmp_path):
    """~10 real rows per split (their real double spaces, ids and signers), real frame counts capped at 6."""
    tree = {}
    for split in ("train", "dev", "test"):
        lines = (REFERENCE / f"{split}.corpus.csv").read_text("utf-8").splitlines()
        counts = dict(ln.split("\t") for ln in (REFERENCE / f"{split}.frames.tsv").read_text().splitlines()[1:])
        rows = [ln.split("|") for ln in lines[1:]]
        # the first rows, plus rows with double spaces where the split has them
        chosen = rows[:8] + [r for r in rows[8:] if "  " in r[3]][:2]
        tree[split] = [Video(r[0], r[3], r[2], min(int(counts[r[0]]), 6), naming="phoenix") for r in chosen]
    tree["train"].insert(3, "05May_2011_Thursday_tagesschau-malformed|only two")  # as the shipped train file has one
    release, _ = make(tmp_path, tree=tree)
    out = tmp_path / "out"
    manifest = convert("phoenix2014", release, out, workers=1, shard_size=4, progress=False)
    for split in ("train", "dev", "test"):
        videos = videos_of(tree, split)
        samples = load_split(out, manifest, split)
        assert list(samples) == [v.id for v in videos]
        for v in videos:
            assert samples[v.id]["gloss.txt"].decode() == " ".join(v.annotation.split())
            assert json.loads(samples[v.id]["meta.json"])["num_frames"] == v.num_frames
    assert any("  " in v.annotation for v in videos_of(tree, "dev"))  # the quirk was exercised
    assert [s["id"] for s in manifest["skipped"]["train"]] == ["train.corpus.csv:5"]
    glosses = sorted({g for v in videos_of(tree, "train") for g in v.annotation.split()})
    assert Vocabulary.load(out / "vocab.txt").glosses == glosses
