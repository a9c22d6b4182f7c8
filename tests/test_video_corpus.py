"""`prepare.py videos` (your own corpus: video files + CSV) and `prepare.py csl-daily` on generated fixtures.

    pytest tests/test_video_corpus.py
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cslr.datasets.convert import ConversionError
from cslr.datasets.csl_daily import CslDailyCorpus, safe_load_pickle
from cslr.datasets.schema import unpack_jpegs
from cslr.datasets.vocab import Vocabulary
from phoenix_fixtures import decode_gray, read_shard

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "launch"))
import prepare  # noqa: E402  (launch/prepare.py)


def load_split(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    manifest = json.loads((out / "manifest.json").read_text())
    samples = {}
    for entry in manifest["splits"][split]["shards"]:
        samples.update(read_shard(out / entry["name"]))
    return samples


# --------------------------------------------------------------------------------------------- videos

def video_tree(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("av", reason='PyAV not installed: pip install -e ".[landmarks]"')
    from video_fixtures import grey_frames, write_video

    videos = tmp_path / "clips"
    write_video(videos / "a" / "v1.mp4", grey_frames(6), fps=25)
    write_video(videos / "v2.webm", grey_frames(8), fps=25)
    write_video(videos / "v3.avi", grey_frames(5), fps=25)
    write_video(tmp_path / "elsewhere" / "v4.mov", grey_frames(7), fps=50)  # absolute path; 50 fps
    (videos / "text.mp4").write_text("not a video\n")
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "id,path,split,signer,glosses,translation\n"
        "v1,a/v1.mp4,train,s1,HELLO  YOU,hello you\n"
        f"v4,{tmp_path / 'elsewhere' / 'v4.mov'},train,s2,THANK YOU,\"thanks, you\"\n"
        "v2,v2.webm,dev,s1,HELLO,hi\n"
        "bad,text.mp4,dev,s2,YOU,x\n"
        "gone,nowhere.mp4,test,s1,YOU,x\n"
        "v3,v3.avi,test,s2,THANK,thanks\n"
        "v5,v3.avi,holdout,s2,THANK,thanks\n", "utf-8")
    return ann, videos


def test_prepare_videos_cli(tmp_path, capsys):
    ann, videos = video_tree(tmp_path)
    out = tmp_path / "out"
    argv = ["videos", "--annotations", str(ann), "--videos", str(videos), "--out", str(out), "--workers", "1",
            "--frame-size", "16", "24", "--fps", "25", "--shard-size", "1", "--no-progress"]
    assert prepare.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"] == "videos" and manifest["protocol"] == "plain" and manifest["fps"] == 25
    assert manifest["frame_size"] == [16, 24] and manifest["modalities"] == ["rgb"]
    assert Vocabulary.load(out / "vocab.txt").glosses == ["HELLO", "THANK", "YOU"]
    expected = {"train": {"v1": 6, "v4": 4}, "dev": {"v2": 8}, "test": {"v3": 5}}  # v4: 7 frames 50 -> 25 fps
    for split, counts in expected.items():
        samples = load_split(out, split)
        assert {k: json.loads(s["meta.json"])["num_frames"] for k, s in samples.items()} == counts
    v1 = load_split(out, "train")["v1"]
    meta = json.loads(v1["meta.json"])
    assert meta == {"signer": "s1", "split": "train", "fps": 25, "num_frames": 6, "corpus": "videos",
                    "orig_size": [32, 48], "frame_size": [16, 24], "translation": "hello you"}
    assert v1["gloss.txt"].decode() == "HELLO YOU"
    assert [round(decode_gray(j) / 10) for j in unpack_jpegs(v1["rgb.jpgs"])] == [1, 3, 5, 7, 9, 11]
    assert json.loads(load_split(out, "train")["v4"]["meta.json"])["translation"] == "thanks, you"
    skipped = {s["id"]: s["reason"] for split in manifest["skipped"].values() for s in split}
    assert set(skipped) == {"bad", "gone", "v5"}
    assert "unreadable video" in skipped["bad"] and str(videos / "text.mp4") in skipped["bad"]
    assert "missing video" in skipped["gone"] and "unknown split 'holdout'" in skipped["v5"]
    assert "3 skipped" in capsys.readouterr().out

    # Rerun: every shard kept; --strict: the first bad row is an error naming the row and the file.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert prepare.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes
    assert prepare.main(argv[:-1] + ["--strict", "--no-progress", "--out", str(tmp_path / "strict")]) == 1
    err = capsys.readouterr().err
    assert "unknown split 'holdout'" in err or ("text.mp4" in err and "ann.csv:5" in err)


def test_videos_strict_names_bad_video(tmp_path):
    ann, videos = video_tree(tmp_path)
    lines = [ln for ln in ann.read_text().splitlines() if not ln.startswith(("v5,", "gone,"))]
    ann.write_text("\n".join(lines) + "\n")
    from cslr.datasets.convert import convert_corpus
    from cslr.datasets.video_corpus import VideoCorpus

    with pytest.raises(ConversionError) as err:
        convert_corpus(VideoCorpus.open(ann, videos), tmp_path / "out", workers=1, strict=True, frame_size=(16, 16),
                       progress=False)
    assert "ann.csv:5" in str(err.value) and str(videos / "text.mp4") in str(err.value)


def test_videos_header_required(tmp_path):
    ann = tmp_path / "ann.csv"
    ann.write_text("v1,a.mp4,train,s1,HELLO\n")
    assert prepare.main(["videos", "--annotations", str(ann), "--videos", str(tmp_path), "--out",
                         str(tmp_path / "o"), "--no-progress"]) == 1


# --------------------------------------------------------------------------------------------- CSL-Daily

def csl_daily_tree(root: Path, info: list[dict], split: dict[str, str], frames: dict[str, int]) -> Path:
    """The CSL-Daily release layout: sentence/frames_512x512/<name>/*.jpg + sentence_label/{pkl, split_1.txt}."""
    labels = root / "sentence_label"
    labels.mkdir(parents=True)
    with open(labels / "csl2020ct_v2.pkl", "wb") as f:
        pickle.dump({"info": info, "gloss_map": sorted({g for e in info for g in e["label_gloss"]}),
                     "char_map": ["你", "好"]}, f, protocol=2)  # protocol 2: sets/tuples need find_class
    (labels / "split_1.txt").write_text("name|split\n" + "".join(f"{n}|{s}\n" for n, s in split.items()), "utf-8")
    for name, n in frames.items():
        d = root / "sentence" / "frames_512x512" / name
        d.mkdir(parents=True)
        for i in range(n):  # 000000.jpg ... as in the release
            Image.new("RGB", (24, 24), (20 * i,) * 3).save(d / f"{i:06d}.jpg", quality=95)
    return root


def entry(name: str, glosses: list[str], signer: int, length: int) -> dict:
    return {"name": name, "length": length, "label_gloss": glosses, "label_char": list("你好"),
            "label_word": ["你好"], "signer": signer, "time": 1.5, "tags": {"a", "b"}}


def test_prepare_csl_daily(tmp_path, capsys):
    info = [entry("S000000_P0000_T00", ["你", "好"], 0, 4), entry("S000001_P0000_T00", ["好"], 1, 3),
            entry("S000002_P0000_T00", ["你"], 2, 5), entry("S000007_P0003_T00", ["好", "你"], 3, 2),
            entry("S000003_P0000_T00", [], 1, 2), entry("S000004_P0000_T00", ["你"], 1, 3)]
    split = {"S000000_P0000_T00": "train", "S000001_P0000_T00": "dev", "S000002_P0000_T00": "test",
             "S000003_P0000_T00": "train", "S000004_P0000_T00": "dev", "S000005_P0004_T00": "train"}
    frames = {"S000000_P0000_T00": 4, "S000001_P0000_T00": 3, "S000002_P0000_T00": 5, "S000007_P0003_T00": 2,
              "S000003_P0000_T00": 2}  # S000004: no frame folder
    root = csl_daily_tree(tmp_path / "CSL-Daily", info, split, frames)
    out = tmp_path / "out"
    assert prepare.main(["csl-daily", "--root", str(root), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"] == "csl-daily" and manifest["protocol"] == "plain" and manifest["fps"] == 30
    assert manifest["frame_size"] == [24, 24]
    train = load_split(out, "train")
    assert list(train) == ["S000000_P0000_T00", "S000007_P0003_T00"]  # unlisted in split_1.txt -> train
    s = train["S000000_P0000_T00"]
    assert s["gloss.txt"].decode() == "你 好"
    meta = json.loads(s["meta.json"])
    assert meta["signer"] == "0" and meta["translation"] == "你好" and meta["num_frames"] == 4 and meta["fps"] == 30
    assert [round(decode_gray(j) / 20) for j in unpack_jpegs(s["rgb.jpgs"])] == [0, 1, 2, 3]
    assert list(load_split(out, "dev")) == ["S000001_P0000_T00"] and list(load_split(out, "test")) == ["S000002_P0000_T00"]
    skipped = {x["id"]: x["reason"] for v in manifest["skipped"].values() for x in v}
    assert "empty annotation" in skipped["S000003_P0000_T00"]
    assert "missing frame folder" in skipped["S000004_P0000_T00"]
    assert "not in csl2020ct_v2.pkl" in skipped["S000005_P0004_T00"]
    assert Vocabulary.load(out / "vocab.txt").glosses == sorted(["你", "好"])


def test_csl_daily_pickle_is_restricted(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"info": [Evil()]}))
    with pytest.raises(ConversionError) as err:
        safe_load_pickle(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not (tmp_path / "pwned").exists()
    path.write_bytes(pickle.dumps({"info": [{"x": np.int64(3)}]}))  # numpy scalars are globals too
    with pytest.raises(ConversionError, match="numpy"):
        safe_load_pickle(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ConversionError, match="not a readable pickle"):
        safe_load_pickle(path)
    ok = {"info": [{"name": "a", "label_gloss": ["x"], "t": (1, 2.5), "s": {1}, "f": frozenset({"y"})}]}
    path.write_bytes(pickle.dumps(ok, protocol=2))
    assert safe_load_pickle(path) == ok


def test_csl_daily_wrong_layout(tmp_path):
    with pytest.raises(ConversionError, match="csl2020ct_v2.pkl"):
        CslDailyCorpus.open(tmp_path)
