"""Landmark extraction over a corpus (cslr/recipes/extract_pose.py, launch/extract_pose.py): the work split over
ranks and Slurm array tasks, resume after an interruption, bad videos, --verify, --format pose, and
`prepare.py --extract-pose` / `--pose-dir` reading what it wrote.

    pytest tests/test_extract_pose.py
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cslr.recipes.extract_pose import ExtractError, list_items, share, task_slot
from conftest import REPO, clean_env

pytest.importorskip("av", reason='PyAV not installed: pip install -e ".[landmarks]"')
from video_fixtures import HAVE_MEDIAPIPE, have_real, signing_frames, write_video  # noqa: E402

needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe 0.10.21 not installed")

LAUNCH = [sys.executable, str(REPO / "launch" / "extract_pose.py")]
IDS = [f"v{i}" for i in range(6)]


def make_corpus(root: Path, bad: bool = False) -> list[str]:
    """Six 3-frame mp4s of real signing (train 4, dev 1, test 1) + a CSV; with `bad`, a text file named .mp4."""
    rows = ["id,path,split,signer,glosses"]
    for i, key in enumerate(IDS):
        frames = signing_frames(3 + i % 2)
        write_video(root / "clips" / f"{key}.mp4", frames[i % 2:] + frames[:i % 2], fps=25)
        rows.append(f"{key},{key}.mp4,{['train', 'train', 'dev', 'train', 'test', 'train'][i]},s{i % 2},A B")
    if bad:
        (root / "clips" / "broken.mp4").write_text("not a video\n")
        rows.insert(3, "broken,broken.mp4,train,s0,A")
    (root / "ann.csv").write_text("\n".join(rows) + "\n")
    return ["--corpus", "videos", "--annotations", str(root / "ann.csv"), "--videos", str(root / "clips")]


def run(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(LAUNCH + args, cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=300)


def popen(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(LAUNCH + args, cwd=REPO, env=clean_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def reports(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / ".extract").glob("task-*.json"))]


def files(out: Path, fmt: str = "npy") -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob(f"*/*.{fmt}"))}


# --------------------------------------------------------------------------------------------- the work split


def test_every_video_exactly_once_for_any_count():
    items = list(range(23))
    for count in range(1, 9):
        shares = [share(items, slot, count) for slot in range(count)]
        assert sorted(x for s in shares for x in s) == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # Slurm arrays x accelerate ranks: 3 array tasks numbered from 1 (--array=1-3), 2 ranks each.
    slots = set()
    for task in (1, 2, 3):
        for rank in (0, 1):
            env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3",
                   "RANK": str(rank), "WORLD_SIZE": "2"}
            slot, count = task_slot(env)
            assert count == 6
            slots.add(slot)
    assert slots == set(range(6))
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
           "SLURM_ARRAY_TASK_COUNT": "3"}  # --array=0-4:2
    assert task_slot(env) == (2, 3)
    assert task_slot({}) == (0, 1) and task_slot({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert task_slot({"SLURM_ARRAY_TASK_ID": "3"}, task_index=1, num_tasks=2) == (1, 2)  # explicit wins
    with pytest.raises(ExtractError, match="contiguous"):
        task_slot({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3"})


def test_items_follow_split_then_annotation_order(tmp_path):
    from cslr.datasets.corpora import open_corpus

    args = make_corpus(tmp_path)
    corpus = open_corpus("videos", annotations=args[3], videos=args[5])
    assert [(i.split, i.row.id) for i in list_items(corpus)] == [
        ("train", "v0"), ("train", "v1"), ("train", "v3"), ("train", "v5"), ("dev", "v2"), ("test", "v4")]


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process extraction of the six videos."""
    if not HAVE_MEDIAPIPE:
        pytest.skip("mediapipe 0.10.21 not installed")
    root = tmp_path_factory.mktemp("extract")
    args = make_corpus(root)
    proc = run(args + ["--out", str(root / "ref"), "--log-every", "0"])
    assert proc.returncode == 0, proc.stderr
    return root, args, files(root / "ref"), proc.stdout


@needs_mediapipe
def test_extraction_writes_what_prepare_reads(reference, tmp_path):
    root, args, ref, stdout = reference
    assert sorted(ref) == sorted(f"{s}/{k}.npy" for s, k in [("train", "v0"), ("train", "v1"), ("train", "v3"),
                                                             ("train", "v5"), ("dev", "v2"), ("test", "v4")])
    pose = np.load(root / "ref" / "train" / "v1.npy")
    assert pose.shape == (4, 543, 3) and pose.dtype == np.float16
    if have_real():  # a real signer: pose and face in every frame
        assert not np.isnan(pose[:, :33]).any() and not np.isnan(pose[:, 33:501]).any()
    assert "6 extracted" in stdout and "frames/s" in stdout and "6/6 videos" in stdout  # progress lines off a TTY
    (report,) = reports(root / "ref")
    assert (report["task"], report["tasks"], report["assigned"], report["kept"]) == (0, 1, 6, 0)
    assert report["frames"] == 21 and report["frames_per_s"] > 0
    assert run(args + ["--out", str(root / "ref"), "--verify"]).returncode == 0

    # prepare.py videos --pose-dir reads the files; --extract-pose inline gives the same landmarks.
    sys.path.insert(0, str(REPO / "launch"))
    import prepare
    from phoenix_fixtures import read_shard

    common = ["videos", "--annotations", args[3], "--videos", args[5], "--workers", "1", "--no-progress"]
    assert prepare.main(common + ["--out", str(tmp_path / "a"), "--pose-dir", str(root / "ref")]) == 0
    assert prepare.main(common + ["--out", str(tmp_path / "b"), "--extract-pose"]) == 0
    for name in ("train-000000.tar", "dev-000000.tar", "test-000000.tar"):
        a, b = read_shard(tmp_path / "a" / name), read_shard(tmp_path / "b" / name)
        for key in a:
            assert a[key]["pose.npy"] == b[key]["pose.npy"], key
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["modalities"] == ["rgb", "pose"] and manifest["pose_layout"][2] == ["left_hand", 21]


@needs_mediapipe
def test_two_ranks_cover_every_video_once(reference, tmp_path):
    root, args, ref, _ = reference
    out = tmp_path / "out"
    # rank 1 with a pool of 2 worker processes: the same bytes either way
    procs = [popen(args + ["--out", str(out), "--workers", str(1 + r)], RANK=str(r), WORLD_SIZE="2") for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    done = [set(r["done"]) for r in reports(out)]
    assert len(done) == 2 and not done[0] & done[1]
    assert sorted(done[0] | done[1]) == sorted(k[:-4] for k in ref)
    assert files(out) == ref  # the same bytes as one process


@needs_mediapipe
def test_interrupted_extraction_resumes_to_identical_files(reference, tmp_path):
    root, args, ref, _ = reference
    out = tmp_path / "out"
    proc = popen(args + ["--out", str(out)])
    deadline = time.time() + 120
    while not list(out.glob("*/*.npy")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid run: at least one file written, not all
    proc.wait()
    written = set(files(out))
    assert 1 <= len(written) < len(ref)
    (out / "dev").mkdir(exist_ok=True)
    (out / "dev" / ".v2.npy.tmp-999999").write_bytes(b"partial")  # a write the kill cut short
    again = run(args + ["--out", str(out)])
    assert again.returncode == 0, again.stderr
    assert files(out) == ref and not list(out.glob("*/.*.tmp-*"))
    (report,) = reports(out)
    assert report["kept"] == len(written) and len(report["done"]) == len(ref) - len(written)


@needs_mediapipe
def test_bad_video_is_named_or_skipped_and_verify_lists_gaps(tmp_path):
    args = make_corpus(tmp_path, bad=True)
    out = tmp_path / "out"
    failed = run(args + ["--out", str(out), "--splits", "train"])
    assert failed.returncode == 1 and "broken.mp4" in failed.stderr and "--skip-bad" in failed.stderr
    ok = run(args + ["--out", str(out), "--splits", "train", "--skip-bad"])
    assert ok.returncode == 0, ok.stderr
    assert "1 bad" in ok.stdout and "broken.mp4" in ok.stdout
    (report,) = reports(out)
    assert [b["id"] for b in report["bad"]] == ["broken"] and "broken.mp4" in report["bad"][0]["reason"]
    assert sorted(p.stem for p in (out / "train").glob("*.npy")) == ["v0", "v1", "v3", "v5"]

    (out / "train" / "v3.npy").write_bytes(b"garbage")
    v1 = np.load(out / "train" / "v1.npy")
    np.save(out / "train" / "v1.npy", v1[:-1])  # well-formed, one frame short of its video file
    check = run(args + ["--out", str(out), "--verify"])
    assert check.returncode == 1
    lines = check.stdout.splitlines()
    assert any(ln.startswith("missing train/broken") for ln in lines)
    assert any(ln.startswith("missing dev/v2") for ln in lines)  # --splits train left dev undone
    assert any(ln.startswith("malformed train/v3") for ln in lines)
    assert any(ln.startswith("malformed train/v1") and f"{len(v1) - 1} frames, the video has {len(v1)}" in ln
               for ln in lines), lines
    assert "7 videos, 5 missing or malformed" in lines[-1]


@needs_mediapipe
def test_phoenix_image_folders_and_pose_format(tmp_path):
    """A PHOENIX-2014 tree of real frames -> --format pose files -> prepare.py phoenix2014 --pose-dir; --verify
    checks frame counts against the PNG folders."""
    from PIL import Image

    from cslr.datasets.phoenix import convert
    from cslr.datasets.posefile import read_pose_file
    from phoenix_fixtures import RELEASE, Video, build_tree

    tree = {"train": [Video("p0", "A B", num_frames=3)], "dev": [Video("p1", "A", num_frames=2)], "test": []}
    release = tmp_path / RELEASE["phoenix2014"]
    corpus = build_tree(release, "phoenix2014", tree)
    for split, videos in tree.items():
        for v in videos:
            for i, frame in enumerate(signing_frames(v.num_frames)):
                Image.fromarray(frame).save(corpus / "features/fullFrame-210x260px" / split / v.id / "1" /
                                            f"images{i + 1:04d}.png")
    args = ["--corpus", "phoenix2014", "--root", str(release), "--out", str(tmp_path / "poses"), "--format", "pose"]
    proc = run(args)
    assert proc.returncode == 0, proc.stderr
    pose = read_pose_file(tmp_path / "poses" / "train" / "p0.pose")
    assert pose.shape == (3, 543, 3) and (not have_real() or not np.isnan(pose[:, :33]).any())
    assert run(args + ["--verify"]).returncode == 0
    manifest = convert("phoenix2014", release, tmp_path / "shards", pose_dir=tmp_path / "poses", workers=1,
                       progress=False)
    assert manifest["modalities"] == ["rgb", "pose"] and manifest["splits"]["train"]["num_samples"] == 1
    png = corpus / "features/fullFrame-210x260px/dev/p1/1/images0002.png"
    png.unlink()  # the video now has 1 frame, its landmark file 2
    check = run(args + ["--verify"])
    assert check.returncode == 1 and "malformed dev/p1" in check.stdout and "2 frames, the video has 1" in check.stdout
