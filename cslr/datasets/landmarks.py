"""MediaPipe Holistic landmarks of a video, in the shard schema's layout.

    from cslr.datasets.landmarks import extract_landmarks
    pose = extract_landmarks(frames)           # frames: iterable of uint8 RGB (H, W, 3) -> float16 (T, 543, 3)

Output: float16 `(T, 543, 3)`, in the order of `schema.POSE_LAYOUT`: 33 pose (BlazePose), 468 face mesh, 21 left
hand, 21 right hand. x and y are normalised to the image (0..1 inside it; a little outside is possible for pose
points), z as MediaPipe gives it (pose: relative to the hips, hands: to the wrist, face: to the face centre, in
roughly x's scale). A part that was not detected in a frame is NaN for all its points in that frame.

Left and right are the **signer's own**, as MediaPipe Holistic reports them: the left hand is the hand at the
signer's left wrist (pose landmark 15), which in an unmirrored camera image is on the image's right side. The
whole package keeps that convention (augmentation's horizontal flip swaps the two hands and the pose's sides).

The model: `mediapipe==0.10.21`, `solutions.holistic` with `model_complexity=1` (its model ships inside that
wheel; complexities 0 and 2 would try to download theirs, and newer wheels ship no models at all), in video mode
(`static_image_mode=False`: detection on the first frame, then tracking), one fresh Holistic per video so that
no tracking state leaks from one video into the next. Its declared pins (protobuf<5, numpy<2) clash with onnx,
tensorboard and wandb, so it is installed without its dependencies:

    pip install -e ".[landmarks]" && pip install --no-deps mediapipe==0.10.21

Speed on a 2-core CPU: ~13-15 frames/s per process, one process already using both cores (README, "Landmarks").
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterable, Iterator

import numpy as np

from .schema import LANDMARK_SLICES, NUM_LANDMARKS

MEDIAPIPE_VERSION = "0.10.21"
INSTALL_HINT = f'pip install -e ".[landmarks]" && pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}'
MODEL_COMPLEXITY = 1  # the only pose model inside the 0.10.21 wheel
# (result attribute, schema part): the order of the 543 points
_PARTS = (("pose_landmarks", "pose"), ("face_landmarks", "face"),
          ("left_hand_landmarks", "left_hand"), ("right_hand_landmarks", "right_hand"))


class LandmarkError(RuntimeError):
    """MediaPipe is missing or failed on a video; the message names the video where there is one."""


def holistic_module():
    """`mediapipe.solutions.holistic`, or a LandmarkError naming the install command."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ INFO/WARNING lines, once per graph
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet_stderr():  # protobuf 6 prints one harmless `GetPrototype` AttributeError line on import
            import mediapipe as mp
            from mediapipe.python.solutions import holistic
    except ImportError as e:
        raise LandmarkError(f"landmark extraction needs MediaPipe {MEDIAPIPE_VERSION} ({e}); install it with:\n"
                            f"    {INSTALL_HINT}") from e
    if getattr(mp, "__version__", MEDIAPIPE_VERSION) != MEDIAPIPE_VERSION:
        # Newer wheels lack solutions.holistic or its models; older ones may differ in output.
        raise LandmarkError(f"MediaPipe {mp.__version__} is installed; landmark extraction needs "
                            f"{MEDIAPIPE_VERSION}: {INSTALL_HINT}")
    return holistic


@contextlib.contextmanager
def _quiet_stderr():
    """Silence fd 2 (C++ and Python) for a moment; restored even when the body raises."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, no real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def results_to_array(results) -> np.ndarray:
    """One frame's Holistic results -> float32 (543, 3): x, y normalised, z as given, NaN for a part not found."""
    out = np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
    for attr, part in _PARTS:
        found = getattr(results, attr)
        if found is None:
            continue
        sl = LANDMARK_SLICES[part]
        pts = np.array([(p.x, p.y, p.z) for p in found.landmark], dtype=np.float32)
        if len(pts) != sl.stop - sl.start:
            raise LandmarkError(f"MediaPipe returned {len(pts)} {part} landmarks, expected {sl.stop - sl.start}")
        out[sl] = pts
    return out


class Holistic:
    """One MediaPipe Holistic graph in video mode, for one video: `with Holistic() as h: h(frame)`.

    A new instance per video: its tracker carries state from frame to frame.
    """

    def __init__(self, model_complexity: int = MODEL_COMPLEXITY, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        holistic = holistic_module()
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # protobuf's label() inside mediapipe 0.10.21
            self._graph = holistic.Holistic(static_image_mode=False, model_complexity=model_complexity,
                                            smooth_landmarks=True, refine_face_landmarks=False,
                                            min_detection_confidence=min_detection_confidence,
                                            min_tracking_confidence=min_tracking_confidence)
        self._started = False

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> float32 (543, 3)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise LandmarkError(f"frames must be uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)
        if not self._started:  # the graph starts on the first frame, with a few lines of C++ log on fd 2
            self._started = True
            with _quiet_stderr():
                return results_to_array(self._graph.process(rgb))
        return results_to_array(self._graph.process(rgb))

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> "Holistic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_landmarks(frames: Iterable[np.ndarray], **holistic_kwargs) -> Iterator[np.ndarray]:
    """Per-frame float32 (543, 3) landmarks of one video's frames (one Holistic for the whole sequence)."""
    with Holistic(**holistic_kwargs) as h:
        for rgb in frames:
            yield h(rgb)


def extract_landmarks(frames: Iterable[np.ndarray], **holistic_kwargs) -> np.ndarray:
    """One video's frames (uint8 RGB (H, W, 3), in order) -> float16 (T, 543, 3) in the shard schema's layout.

    Args:
        frames: the video's frames; T >= 1.
        holistic_kwargs: model_complexity (1), min_detection_confidence, min_tracking_confidence (0.5).
    """
    rows = list(iter_landmarks(frames, **holistic_kwargs))
    if not rows:
        raise LandmarkError("no frames to extract landmarks from")
    return np.stack(rows).astype(np.float16)


def detected(pose: np.ndarray, part: str) -> np.ndarray:
    """(T,) bool: frames in which `part` ("pose", "face", "left_hand", "right_hand") was detected."""
    return ~np.isnan(pose[:, LANDMARK_SLICES[part], 0]).all(axis=1)
