"""Small generated videos (PyAV encodes them) and the real signing material beside the clone.

Frame i of a generated video is a flat grey of value `frame_value(i)` (as in phoenix_fixtures), so order and
resampling can be checked after lossy compression; `signing_frames` gives real signing frames when
`../shared/reference/real` exists (PHOENIX-2014-T frames), else textured noise.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from cslr.datasets.landmarks import LandmarkError, holistic_module

REAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "real"
REAL_VIDEO = REAL / "signing_540x720.mp4"
REAL_FRAMES = [REAL / "phoenix2014T" / "frames" / f"images000{i}.png" for i in (1, 2)]
REAL_POSE = REAL / "phoenix2014T" / "25October_2010_Monday_tagesschau-17"  # .pose / .npy


def have_mediapipe() -> bool:
    """mediapipe 0.10.21 importable with its Holistic models (the landmarks extra + the no-deps install)."""
    try:
        holistic_module()
        return True
    except LandmarkError:
        return False


HAVE_MEDIAPIPE = have_mediapipe()


def have_real() -> bool:
    return all(p.is_file() for p in REAL_FRAMES)
# container suffix -> (codec, pixel format)
CODECS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx", "yuv420p"), ".avi": ("mpeg4", "yuv420p"),
          ".mov": ("mjpeg", "yuvj420p"), ".mkv": ("ffv1", "yuv420p")}


def frame_value(i: int) -> int:
    return 10 + 20 * (i % 12)


def grey_frames(n: int, size=(32, 48)) -> list[np.ndarray]:
    return [np.full((*size, 3), frame_value(i), dtype=np.uint8) for i in range(n)]


def signing_frames(n: int) -> list[np.ndarray]:
    """n frames of a real signer (the two real PHOENIX-2014-T frames, alternating) or, without ../shared,
    textured frames of PHOENIX's size."""
    if have_real():
        from PIL import Image

        real = [np.asarray(Image.open(p).convert("RGB")) for p in REAL_FRAMES]
        return [real[i % 2] for i in range(n)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (260, 210, 3), dtype=np.uint8) for _ in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25, codec: str | None = None,
                rotation: int = 0, options: dict | None = None) -> Path:
    """Encode RGB frames with PyAV; the codec follows the suffix (CODECS) unless given. Even sizes for yuv420p.

    `rotation`: a display matrix turning the frames this many degrees counterclockwise, as phones store portrait
    videos (the stored frames are `frames`; a player shows them turned)."""
    import av

    name, pix = CODECS[path.suffix] if codec is None else (codec, "yuv420p")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream(name, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix
        if rotation:
            stream.set_display_rotation(rotation)
        if name == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        elif name in ("mpeg4", "mjpeg", "libvpx"):
            stream.bit_rate = 4_000_000
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def mean_grey(rgb: np.ndarray) -> float:
    return float(rgb.astype(np.float32).mean())
