"""PyAV video decoding (cslr/datasets/video.py) on generated mp4/webm/avi/mov/mkv files and the real signing video.

    pytest tests/test_video.py
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av", reason='PyAV not installed: pip install -e ".[landmarks]"')

from cslr.datasets.video import (VideoError, iter_frames, open_frames, open_video, read_frames,  # noqa: E402
                                 resample_indices)
from video_fixtures import REAL_VIDEO, frame_value, grey_frames, mean_grey, write_video  # noqa: E402


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi", ".mov", ".mkv"])
def test_containers_decode_in_order(tmp_path, suffix):
    path = write_video(tmp_path / f"v{suffix}", grey_frames(9, (32, 48)), fps=25)
    info = open_video(path)
    assert (info.frames, info.height, info.width) == (9, 32, 48) and info.fps == pytest.approx(25)
    frames = list(iter_frames(path))
    assert len(frames) == 9
    assert all(f.dtype == np.uint8 and f.shape == (32, 48, 3) for f in frames)
    assert [mean_grey(f) for f in frames] == pytest.approx([frame_value(i) for i in range(9)], abs=4)


def test_resize_and_fps_resampling(tmp_path):
    path = write_video(tmp_path / "v.mp4", grey_frames(12), fps=30)
    assert read_frames(path, size=(16, 20)).shape == (12, 16, 20, 3)
    # 30 -> 15 fps: every other frame; 30 -> 60: each frame twice; 30 -> 25: frame floor(k * 1.2)
    for fps, expected in ((15, [0, 2, 4, 6, 8, 10]), (60, [i // 2 for i in range(24)]),
                          (25, [int(k * 1.2) for k in range(10)])):
        got = [mean_grey(f) for f in iter_frames(path, fps=fps)]
        assert got == pytest.approx([frame_value(i) for i in expected], abs=4), fps
        assert resample_indices(12, 30, fps) == expected


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    """A phone's portrait video: stored landscape with a display matrix; decoded upright, as a player shows it."""
    stored = []
    for i in range(4):
        f = np.full((32, 48, 3), 40, np.uint8)
        f[:8, :12] = 250  # a bright block in the stored top-left corner
        stored.append(f)
    path = write_video(tmp_path / "phone.mp4", stored, rotation=rotation)
    shown = np.rot90(stored[0], rotation // 90)  # counterclockwise turns
    info = open_video(path)
    assert info.rotation % 360 == rotation % 360 and (info.height, info.width) == shown.shape[:2]
    frames = read_frames(path)
    assert frames.shape == (4, *shown.shape)
    bright = frames[0].mean(-1) > 150
    assert np.abs(bright.astype(int) - (shown.mean(-1) > 150)).mean() < 0.02  # the block where the player shows it
    assert read_frames(path, size=(20, 14)).shape == (4, 20, 14, 3)  # size is the displayed (H, W)


@pytest.mark.parametrize("suffix, rotation", [(".mp4", 90), (".webm", 0)])  # webm: frames counted by demuxing
def test_open_frames_opens_the_file_once_and_equals_open_video_and_iter_frames(tmp_path, monkeypatch, suffix,
                                                                               rotation):
    """What converters use: the VideoInfo and the frames from one opening, the first frame (decoded for the
    rotation) kept rather than decoded again."""
    import av

    path = write_video(tmp_path / f"v{suffix}", grey_frames(9, (32, 48)), fps=25, rotation=rotation)
    expected_info, expected = open_video(path), read_frames(path, fps=15)
    opened, real_open = [], av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    info, frames = open_frames(path, fps=15)
    assert info == expected_info and info.rotation % 360 == rotation % 360
    got = np.stack(list(frames))
    assert len(opened) == 1 and got.shape == expected.shape and np.array_equal(got, expected)


def test_resample_indices_counts():
    for n in (1, 2, 7, 141):
        for src, fps in ((25, 25), (25, 12.5), (29.97, 25), (25, 30), (30, 7)):
            idx = resample_indices(n, src, fps)
            assert idx[0] == 0 and idx == sorted(idx) and max(idx) < n
            assert abs(len(idx) - n * fps / src) < 1 + 1e-9


@pytest.mark.parametrize("case", ["text", "empty", "truncated", "missing", "zero_frames"])
def test_bad_videos_name_the_file(tmp_path, case):
    path = tmp_path / f"bad-{case}.mp4"
    if case == "text":
        path.write_text("this is a text file, not a video\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        good = write_video(tmp_path / "good.mp4", grey_frames(30, (64, 64)))
        data = good.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif case == "zero_frames":
        import av

        with av.open(str(path), "w") as out:  # a container with a video stream and no frame
            s = out.add_stream("libx264", rate=25)
            s.width = s.height = 16
            s.pix_fmt = "yuv420p"
    with pytest.raises(VideoError) as err:
        open_video(path)
        list(iter_frames(path))
    assert str(path) in str(err.value)


@pytest.mark.skipif(not REAL_VIDEO.is_file(), reason=f"{REAL_VIDEO} not present")
def test_real_signing_video():
    info = open_video(REAL_VIDEO)
    assert (info.frames, info.height, info.width, info.codec) == (58, 720, 540, "h264")
    assert info.fps == pytest.approx(29.92, abs=0.01)
    frames = read_frames(REAL_VIDEO)
    assert frames.shape == (58, 720, 540, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # real content, not a flat frame
    assert len(list(iter_frames(REAL_VIDEO, fps=25))) == 49  # ceil(58 * 25 / 29.92)
