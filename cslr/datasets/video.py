"""Video files -> RGB frames, through PyAV (`av`, which bundles FFmpeg): any container and codec FFmpeg reads
(mp4, webm, avi, mov, mkv, ...).

    info = open_video("clip.mp4")              # VideoInfo(fps=29.92, frames=58, height=720, width=540, ...)
    for rgb in iter_frames("clip.mp4", fps=25, size=(224, 224)):
        ...                                    # uint8 (H, W, 3) arrays, RGB
    info, frames = open_frames("clip.mp4", fps=25)  # both from one opening (converters)

The torchvision that pip installs here (0.29) has no video reader; PyAV is what this package uses for video.
It is an optional dependency (`pip install av`, part of the `landmarks` extra); the import happens on first use
so that the rest of cslr.datasets works without it.

Every failure to read a video -- a missing file, a file that is not a video (a text file named `.mp4`), a
truncated download, a video without a video stream or without a single decodable frame -- raises VideoError
whose message names the file.

Frame-rate resampling keeps the source frame on screen at each output time: output frame k (at k / fps) is
source frame floor(k * src_fps / fps). Lowering the rate drops frames, raising it repeats them; the time
stamps of the container are not consulted (constant frame rate assumed, which is what the CSLR corpora have).
Display rotation (phones' portrait videos) is applied: frames come out upright, as a player shows them. PyAV
exposes it only on decoded frames (no stream-level reader; FFmpeg keeps it in the stream's coded side data), so
open_video decodes the first frame; open_frames keeps that frame as the first one its iterator yields.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
INSTALL_HINT = 'pip install -e ".[landmarks]"  (or: pip install av)'


class VideoError(ValueError):
    """A video that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream."""

    path: str
    fps: float  # the stream's average frame rate
    frames: int  # frames in the stream (the container's count, else counted by demuxing)
    height: int
    width: int
    codec: str
    container: str
    rotation: int = 0  # degrees counterclockwise the frames are turned for display (phones' portrait videos)

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


def _av():
    try:
        import av
    except ImportError as e:  # optional dependency: only video input needs it
        raise ImportError(f"reading video files needs PyAV: {INSTALL_HINT}") from e
    return av


def _open(path: Path):
    """(av module, open container, its first video stream); raises VideoError naming the file."""
    av = _av()
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes), not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: not a readable video ({e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is not the bottleneck then
    return av, container, stream


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _quarter_turns(rotation: int) -> int:
    """Counterclockwise quarter turns (0-3) for a display rotation in degrees (multiples of 90 in practice)."""
    return int(round(rotation / 90.0)) % 4


def _probe(path: Path, av, container, stream) -> tuple[VideoInfo, Iterator | None]:
    """(VideoInfo of the open container, its decoded frames from the first on), or None for the frames where
    rewinding or decoding the first frame failed (rotation 0 then; a fresh iter_frames names the problem).

    The display rotation is read from the first decoded frame (its display matrix; 0 without one), which the
    iterator yields first instead of decoding it again.
    """
    frames = int(stream.frames or 0)
    demuxed = frames == 0
    if demuxed:
        try:
            frames = sum(1 for p in container.demux(stream) if p.size)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: unreadable video ({e})") from e
    ctx = stream.codec_context
    if frames == 0:
        raise VideoError(f"{path}: the video stream has no frames")
    rotation, decoded = 0, None
    try:
        if demuxed:  # the packets were read to count them: back to the start
            container.seek(0, stream=stream)
        it = container.decode(stream)
        first = next(it, None)
        if first is not None:
            rotation, decoded = int(first.rotation or 0), itertools.chain([first], it)
    except av.FFmpegError:
        pass  # undecodable: iter_frames names the problem
    h, w = (int(ctx.width), int(ctx.height)) if _quarter_turns(rotation) % 2 else (int(ctx.height), int(ctx.width))
    return VideoInfo(str(path), _fps(stream), frames, h, w, ctx.name, container.format.name, rotation), decoded


def open_video(path: str | os.PathLike) -> VideoInfo:
    """The video's frame rate, frame count, displayed size and rotation. Raises VideoError naming the file.

    The frame count is the container's when it has one (mp4, mov), else counted by demuxing the packets
    (webm, some avi); a video with no frame is an error. Height and width are as displayed: a phone's portrait
    video stored landscape with a 90-degree display matrix is reported (and decoded by iter_frames) portrait.
    """
    path = Path(path)
    av, container, stream = _open(path)
    try:
        return _probe(path, av, container, stream)[0]
    finally:
        container.close()


def open_frames(path: str | os.PathLike, fps: float | None = None,
                size: tuple[int, int] | None = None) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """open_video and iter_frames from one opening: (VideoInfo, the frames as iter_frames yields them).

    The container stays open for the iterator, whose first frame is the one decoded for the rotation (decoded
    once, not again as after open_video + iter_frames). Raises VideoError now as open_video does, and while
    iterating as iter_frames does. The container is closed when the iterator ends, or when it is dropped.
    """
    path = Path(path)
    av, container, stream = _open(path)
    try:
        info, decoded = _probe(path, av, container, stream)
    except BaseException:
        container.close()
        raise
    if decoded is None:  # rewinding or the first frame failed: decode afresh, where iter_frames names the problem
        container.close()
        return info, iter_frames(path, fps=fps, size=size)
    return info, _frames(path, av, container, stream, decoded, fps, size)


def resample_indices(num_src: int, src_fps: float, fps: float | None) -> list[int]:
    """Source frame index of each output frame at `fps` (all frames when fps is None or equal to the source's)."""
    if fps is None or src_fps <= 0 or abs(fps - src_fps) < 1e-6:
        return list(range(num_src))
    n_out = max(1, math.ceil(num_src * fps / src_fps - 1e-9))
    return [min(num_src - 1, int(math.floor(k * src_fps / fps + 1e-9))) for k in range(n_out)]


def upright_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded PyAV frame -> uint8 RGB (H, W, 3) as displayed (its display rotation applied), resized
    (bilinear) to `size` (H, W) when given."""
    turns = _quarter_turns(frame.rotation or 0)
    if size is not None:  # the displayed (H, W): the stored frame is (W, H) under a quarter turn
        h, w = (size[1], size[0]) if turns % 2 else size
        frame = frame.reformat(width=int(w), height=int(h), format="rgb24", interpolation="BILINEAR")
    rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def iter_frames(path: str | os.PathLike, fps: float | None = None,
                size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames as uint8 RGB arrays (H, W, 3), in order.

    Args:
        path: the video file.
        fps: resample to this frame rate (None: every frame, at the source's rate).
        size: (H, W) to resize each frame to (bilinear); None keeps the stored size.

    Frames come upright as displayed: a display matrix's rotation (phones' portrait videos) is applied.

    Raises VideoError naming the file when it cannot be opened, when decoding fails part-way (a truncated
    file), when it holds fewer frames than its container declares, or when no frame decodes at all.
    """
    path = Path(path)
    av, container, stream = _open(path)
    yield from _frames(path, av, container, stream, container.decode(stream), fps, size)


def _frames(path: Path, av, container, stream, decoded: Iterator, fps: float | None,
            size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """iter_frames on an open container whose decoded frames `decoded` yields (from the first on); closes it."""
    declared = int(stream.frames or 0)
    src_fps = _fps(stream)
    if fps is not None and (fps <= 0 or not math.isfinite(fps)):
        container.close()
        raise VideoError(f"{path}: fps must be positive, got {fps}")
    step = src_fps / fps if fps is not None and src_fps > 0 else None  # source frames per output frame
    n_decoded = next_out = 0  # source frames decoded; index of the next output frame
    try:
        try:
            for frame in decoded:
                i, n_decoded = n_decoded, n_decoded + 1
                repeats = 1
                if step is not None:  # the output frames k whose source frame floor(k * step) is this one
                    repeats = 0
                    while math.floor(next_out * step + 1e-9) <= i:
                        repeats += 1
                        next_out += 1
                if repeats == 0:
                    continue
                rgb = upright_rgb(frame, size)
                for _ in range(repeats):
                    yield rgb
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed after {n_decoded} frames, the file is corrupt or truncated "
                             f"({e})") from e
    finally:
        container.close()
    if n_decoded == 0:
        raise VideoError(f"{path}: no frame could be decoded")
    if declared and n_decoded < declared:
        raise VideoError(f"{path}: truncated: decoded {n_decoded} of the {declared} frames the container declares")


def read_frames(path: str | os.PathLike, fps: float | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames at once: uint8 (T, H, W, 3). Raises VideoError naming the file."""
    return np.stack(list(iter_frames(path, fps=fps, size=size)))


def output_fps(info: VideoInfo, fps: float | None) -> float:
    """The frame rate the frames of iter_frames(info.path, fps) come at."""
    return float(fps) if fps is not None else info.fps
