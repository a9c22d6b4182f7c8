"""MediaPipe Holistic extraction (cslr/datasets/landmarks.py) on real signing, and `.pose` files (posefile.py).

The real material is read from ../shared/reference/real (never copied into the repository); its tests skip when
that folder is absent. The MediaPipe tests skip when mediapipe 0.10.21 is not installed
(`pip install -e ".[landmarks]" && pip install --no-deps mediapipe==0.10.21`).

    pytest tests/test_landmarks.py
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest

from cslr.datasets.landmarks import LandmarkError, detected
from cslr.datasets.schema import LANDMARK_SLICES, NUM_LANDMARKS, POSE_LEFT_WRIST, POSE_RIGHT_WRIST
from video_fixtures import HAVE_MEDIAPIPE, REAL_FRAMES, REAL_POSE, REAL_VIDEO

needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe 0.10.21 not installed")
needs_real = pytest.mark.skipif(not (REAL_FRAMES[0].is_file() and REAL_VIDEO.is_file()),
                                reason=f"{REAL_VIDEO.parent} not present")
PARTS = ("pose", "face", "left_hand", "right_hand")


def check_conventions(pose: np.ndarray, frames: int) -> None:
    """Shape, dtype, and NaN per part and frame: a part is either wholly detected or wholly NaN."""
    assert pose.shape == (frames, NUM_LANDMARKS, 3) and pose.dtype == np.float16
    for part in PARTS:
        nan = np.isnan(pose[:, LANDMARK_SLICES[part]])
        assert (nan.all(axis=(1, 2)) | ~nan.any(axis=(1, 2))).all(), part


def real_frames() -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in REAL_FRAMES]


@needs_mediapipe
@needs_real
def test_real_phoenix_frames_match_the_real_landmarks():
    """The two real PHOENIX-2014-T frames: pose and face found, the signer's left wrist on the image's right, and
    the pose matches the real landmark file after a per-axis affine map (that file came from a 2021 MediaPipe;
    ../shared/reference/real/README.md): x, y of the upper body (points 0-24; the legs are below the frame)."""
    from cslr.datasets.landmarks import extract_landmarks

    pose = extract_landmarks(real_frames())
    check_conventions(pose, 2)
    assert detected(pose, "pose").all() and detected(pose, "face").all()
    p = pose.astype(np.float32)
    assert p[:, POSE_LEFT_WRIST, 0].min() > 0.5 > p[:, POSE_RIGHT_WRIST, 0].max()  # facing the camera
    face = p[:, LANDMARK_SLICES["face"], :2]
    assert ((face > 0) & (face < 1)).all()

    ref = np.load(REAL_POSE.with_suffix(".npy"))[:2].astype(np.float32)  # x / 210, y / 260 of the file's pixels
    for axis, pixels in ((0, 210), (1, 260)):
        ours, theirs = p[:, :25, axis].ravel(), ref[:, :25, axis].ravel() * pixels
        design = np.stack([ours, np.ones_like(ours)], axis=1)
        coef, *_ = np.linalg.lstsq(design, theirs, rcond=None)
        residual = np.abs(theirs - design @ coef).mean()
        assert residual <= 6.0, (axis, coef, residual)
        assert 0.8 * pixels < coef[0] < 1.25 * pixels  # a near-identity map, not a degenerate fit


@needs_mediapipe
@needs_real
def test_real_signing_video_hands_follow_the_pose_wrists():
    """The real signing video, frames 0-38 at half rate: pose and face in every frame; the hands MediaPipe finds
    sit at the pose wrist of the same side (left = the signer's left, pose landmark 15)."""
    from cslr.datasets.landmarks import extract_landmarks
    from cslr.datasets.video import iter_frames

    pose = extract_landmarks(itertools.islice(iter_frames(REAL_VIDEO, fps=15), 20))
    check_conventions(pose, 20)
    assert detected(pose, "pose").all() and detected(pose, "face").all()
    p = pose.astype(np.float32)
    found = 0
    for hand, same, other in (("left_hand", POSE_LEFT_WRIST, POSE_RIGHT_WRIST),
                              ("right_hand", POSE_RIGHT_WRIST, POSE_LEFT_WRIST)):
        frames = detected(pose, hand)
        found += frames.sum()
        wrist = p[frames, LANDMARK_SLICES[hand].start, :2]  # hand landmark 0 is the wrist
        near = np.linalg.norm(wrist - p[frames, same, :2], axis=1)
        far = np.linalg.norm(wrist - p[frames, other, :2], axis=1)
        assert (near < far / 3).all() and (near < 0.2).all(), (hand, near, far)
    assert found >= 3  # the signer's right hand is up in these frames (the left stays out of the picture)


@needs_mediapipe
def test_blank_frames_give_nan_and_each_video_starts_fresh():
    from cslr.datasets.landmarks import extract_landmarks

    blank = [np.full((64, 48, 3), 127, np.uint8)] * 3
    pose = extract_landmarks(blank)
    check_conventions(pose, 3)
    assert np.isnan(pose).all()
    with pytest.raises(LandmarkError, match="uint8 RGB"):
        extract_landmarks([np.zeros((8, 8), np.float32)])


def test_missing_mediapipe_names_the_install_command(monkeypatch):
    import cslr.datasets.landmarks as lm

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(LandmarkError, match=r"pip install --no-deps mediapipe==0\.10\.21"):
        lm.holistic_module()


# --------------------------------------------------------------------------------------------- .pose files

pose_format = pytest.importorskip("pose_format", reason='pose-format not installed: pip install -e ".[landmarks]"')


@pytest.mark.skipif(not REAL_POSE.with_suffix(".pose").is_file(), reason=f"{REAL_POSE} not present")
def test_real_pose_file_reads_as_the_real_npy():
    from cslr.datasets.posefile import read_pose_file

    pose = read_pose_file(REAL_POSE.with_suffix(".pose"))
    ref = np.load(REAL_POSE.with_suffix(".npy"))
    assert pose.shape == ref.shape == (86, NUM_LANDMARKS, 3)
    np.testing.assert_array_equal(np.isnan(pose), np.isnan(ref))
    np.testing.assert_allclose(pose.astype(np.float16).astype(np.float32), ref.astype(np.float32), rtol=0, atol=1e-3)
    assert 0.5 < (~detected(ref, "left_hand")).mean() < 0.65  # the README's 57 %


def random_landmarks(frames: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pose = rng.random((frames, NUM_LANDMARKS, 3), dtype=np.float32).astype(np.float16)
    pose[1, LANDMARK_SLICES["left_hand"]] = np.nan
    pose[frames - 1, LANDMARK_SLICES["right_hand"]] = np.nan
    return pose


def test_pose_file_round_trip(tmp_path):
    from pose_format import Pose

    from cslr.datasets.posefile import load_landmarks, write_pose_file

    pose = random_landmarks()
    path = tmp_path / "v.pose"
    write_pose_file(path, pose, width=210, height=260, fps=25)
    back = load_landmarks(path)
    np.testing.assert_array_equal(back.astype(np.float16), pose)  # NaN == NaN here
    p = Pose.read(path.read_bytes())  # what the pose-format tools see: pixels, confidence 0 where NaN
    assert [c.name for c in p.header.components] == ["POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS",
                                                    "RIGHT_HAND_LANDMARKS"]
    assert (p.header.dimensions.width, p.header.dimensions.height, p.body.fps) == (210, 260, 25)
    assert p.body.confidence[1, 0, LANDMARK_SLICES["left_hand"]].max() == 0
    np.testing.assert_allclose(np.ma.getdata(p.body.data)[0, 0, 0, :2],
                               pose[0, 0, :2].astype(np.float32) * [210, 260], rtol=1e-6)


def test_unmappable_pose_file_names_its_components(tmp_path):
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

    from cslr.datasets.posefile import PoseFileError, read_pose_file

    comps = [PoseHeaderComponent("BODY_135", [str(i) for i in range(135)], [], [(255, 0, 0)], "XYC")]
    body = NumPyPoseBody(25, np.zeros((2, 1, 135, 2), np.float32), np.ones((2, 1, 135), np.float32))
    path = tmp_path / "openpose.pose"
    with open(path, "wb") as f:
        Pose(PoseHeader(0.2, PoseHeaderDimensions(100, 100, 0), comps), body).write(f)
    with pytest.raises(PoseFileError) as err:
        read_pose_file(path)
    msg = str(err.value)
    assert str(path) in msg and "BODY_135 (135 points)" in msg and "LEFT_HAND_LANDMARKS" in msg
    (tmp_path / "junk.pose").write_bytes(b"\x00\x01garbage")
    with pytest.raises(PoseFileError, match="junk.pose"):
        read_pose_file(tmp_path / "junk.pose")


def test_prepare_reads_pose_files_like_npy(tmp_path):
    """--pose-dir of .pose files gives the same shards as the same landmarks in .npy files."""
    from cslr.datasets.phoenix import convert
    from cslr.datasets.posefile import write_pose_file
    from phoenix_fixtures import RELEASE, Video, build_tree, read_shard

    tree = {"train": [Video("a", "X Y", num_frames=5)], "dev": [Video("b", "X", num_frames=4)],
            "test": [Video("c", "Y", num_frames=3)]}
    release = tmp_path / RELEASE["phoenix2014"]
    build_tree(release, "phoenix2014", tree)
    for fmt in ("npy", "pose"):
        for split, videos in tree.items():
            (tmp_path / fmt / split).mkdir(parents=True)
            for i, v in enumerate(videos):
                pose = random_landmarks(v.num_frames, seed=i)
                if fmt == "npy":
                    np.save(tmp_path / fmt / split / f"{v.id}.npy", pose)
                else:
                    write_pose_file(tmp_path / fmt / split / f"{v.id}.pose", pose, 21, 26, 25)
        convert("phoenix2014", release, tmp_path / f"out-{fmt}", pose_dir=tmp_path / fmt, workers=1, progress=False)
    for name in ("train-000000.tar", "dev-000000.tar", "test-000000.tar"):
        a, b = (read_shard(tmp_path / f"out-{fmt}" / name) for fmt in ("npy", "pose"))
        for key in a:
            assert a[key]["pose.npy"] == b[key]["pose.npy"]
            assert json.loads(b[key]["meta.json"])["pose_layout"][0] == ["pose", 33]
