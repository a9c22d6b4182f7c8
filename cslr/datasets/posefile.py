"""Landmark files: `.npy` (the shard schema's array) and `.pose` (the `pose-format` package's file format, the
sign-language-processing community's exchange format).

    pose = load_landmarks("poses/dev/<id>.pose")      # float (T, 543, 3), x/y normalised, NaN = not detected
    write_pose_file("out.pose", pose, width=210, height=260, fps=25)

A `.pose` file names its parts (`header.components`) and stores pixels: `body.data` is (T, people, points, dims),
`body.confidence` (T, people, points) is 0 where a point was not detected, `header.dimensions` gives the image
width and height. Reading maps the components by name to the 543-point MediaPipe Holistic layout:

    POSE_LANDMARKS (33) | FACE_LANDMARKS (first 468; a refined mesh's 10 iris points are dropped) |
    LEFT_HAND_LANDMARKS (21) | RIGHT_HAND_LANDMARKS (21)

converts x / width and y / height, keeps z as stored (0 when the file has no z), makes points of confidence 0
NaN, and uses the first person. Other components (POSE_WORLD_LANDMARKS, ...) are ignored; a file without one of
the four, or with fewer points than the layout needs, is an error naming its components. Written files hold
exactly the four components (point format XYZC, confidence 1 where detected, 0 where NaN), which is also what
`pose_format.utils.holistic` writes for MediaPipe Holistic, so the pose-format tools (visualiser, normalisation)
read them.

`pose-format` is an optional dependency (`pip install pose-format`, part of the `landmarks` extra), imported on
first use of a `.pose` file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cslr.io import atomic_write_bytes

from .schema import LANDMARK_SLICES, NUM_LANDMARKS, POSE_LAYOUT

POSE_SUFFIXES = (".npy", ".pose")
# schema part -> pose-format component name (MediaPipe Holistic's, as pose_format.utils.holistic names them)
COMPONENTS = {"pose": "POSE_LANDMARKS", "face": "FACE_LANDMARKS", "left_hand": "LEFT_HAND_LANDMARKS",
              "right_hand": "RIGHT_HAND_LANDMARKS"}
BODY_POINTS = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE", "RIGHT_EYE_OUTER",
    "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
    "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX",
    "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE",
    "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX")
BODY_LIMBS = (
    (0, 1), (0, 4), (1, 2), (2, 3), (3, 7), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (11, 23),
    (12, 14), (12, 24), (13, 15), (14, 16), (15, 17), (15, 19), (15, 21), (16, 18), (16, 20), (16, 22), (17, 19),
    (18, 20), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (27, 31), (28, 30), (28, 32), (29, 31),
    (30, 32))
HAND_POINTS = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP", "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP", "PINKY_MCP",
    "PINKY_PIP", "PINKY_DIP", "PINKY_TIP")
HAND_LIMBS = ((0, 1), (0, 5), (0, 17), (1, 2), (2, 3), (3, 4), (5, 6), (5, 9), (6, 7), (7, 8), (9, 10), (9, 13),
              (10, 11), (11, 12), (13, 14), (13, 17), (14, 15), (15, 16), (17, 18), (18, 19), (19, 20))
INSTALL_HINT = 'pip install -e ".[landmarks]"  (or: pip install pose-format)'


class PoseFileError(ValueError):
    """A landmark file that cannot be read or mapped; the message names the file."""


def _pose_format():
    try:
        from pose_format import Pose
        from pose_format.numpy import NumPyPoseBody
        from pose_format.pose_header import VERSION, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions
    except ImportError as e:  # optional dependency: only .pose files need it
        raise ImportError(f"reading or writing .pose files needs pose-format: {INSTALL_HINT}") from e
    return Pose, NumPyPoseBody, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions, VERSION


def find_landmark_file(folder: str | os.PathLike, key: str) -> Path | None:
    """`<folder>/<key>.npy`, else `<folder>/<key>.pose`, else None."""
    for suffix in POSE_SUFFIXES:
        path = Path(folder) / f"{key}{suffix}"
        if path.is_file():
            return path
    return None


def load_landmarks(path: str | os.PathLike) -> np.ndarray:
    """A `.npy` (any numeric (T, K, C) array, never unpickled) or `.pose` file (-> float32 (T, 543, 3)).

    Raises PoseFileError naming the file for unreadable bytes or unmappable components.
    """
    path = Path(path)
    if path.suffix == ".pose":
        return read_pose_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise PoseFileError(f"{path}: unreadable landmark file ({e})") from e


def read_pose_file(path: str | os.PathLike) -> np.ndarray:
    """A `.pose` file -> float32 (T, 543, 3): x / width, y / height, z as stored, NaN where confidence is 0."""
    path = Path(path)
    Pose = _pose_format()[0]
    try:
        pose = Pose.read(path.read_bytes())
    except OSError as e:
        raise PoseFileError(f"{path}: unreadable .pose file ({e})") from e
    except Exception as e:  # pose-format raises struct.error, ValueError, IndexError ... on bad bytes
        raise PoseFileError(f"{path}: not a readable .pose file ({type(e).__name__}: {e})") from e
    return pose_to_array(pose, str(path))


def pose_to_array(pose, where: str = "pose") -> np.ndarray:
    """A pose_format.Pose -> float32 (T, 543, 3) in the schema's layout (see the module docstring)."""
    header = pose.header
    names = [c.name for c in header.components]
    width, height = header.dimensions.width, header.dimensions.height
    if not width or not height:
        raise PoseFileError(f"{where}: header dimensions {width}x{height}: cannot normalise pixel coordinates")
    data = np.ma.getdata(pose.body.data).astype(np.float32)  # (T, people, points, dims)
    conf = np.asarray(pose.body.confidence, dtype=np.float32)  # (T, people, points)
    if data.ndim != 4 or data.shape[1] < 1:
        raise PoseFileError(f"{where}: body data of shape {data.shape}, expected (T, people >= 1, points, dims)")
    data, conf = data[:, 0], conf[:, 0]  # the first person
    out = np.full((data.shape[0], NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
    start, missing = {}, []
    offset = 0
    for c in header.components:
        start[c.name] = (offset, len(c.points))
        offset += len(c.points)
    for part, count in POSE_LAYOUT:
        name = COMPONENTS[part]
        if name not in start or start[name][1] < count:
            missing.append(f"{name} ({count} points)")
            continue
        first = start[name][0]
        pts, ok = data[:, first:first + count], conf[:, first:first + count] > 0
        sl = LANDMARK_SLICES[part]
        out[:, sl, 0] = pts[..., 0] / width
        out[:, sl, 1] = pts[..., 1] / height
        out[:, sl, 2] = pts[..., 2] if pts.shape[-1] > 2 else 0.0
        out[:, sl][~ok] = np.nan  # out[:, sl] is a view
    if missing:
        found = ", ".join(f"{n} ({start[n][1]} points)" for n in names) or "none"
        raise PoseFileError(f"{where}: cannot map the components to MediaPipe Holistic's 543 points: missing "
                            f"{', '.join(missing)}; the file has {found}")
    return out


def _header(width: int, height: int):
    _, _, PoseHeader, Component, Dimensions, version = _pose_format()
    red, face, hand = [(255, 0, 0)], [(128, 0, 0)], [(232, 232, 232)] + [(192, 0, 0)] * 20
    components = [
        Component("POSE_LANDMARKS", list(BODY_POINTS), list(BODY_LIMBS), red, "XYZC"),
        Component("FACE_LANDMARKS", [str(i) for i in range(468)], [], face, "XYZC"),
        Component("LEFT_HAND_LANDMARKS", list(HAND_POINTS), list(HAND_LIMBS), hand, "XYZC"),
        Component("RIGHT_HAND_LANDMARKS", list(HAND_POINTS), list(HAND_LIMBS), hand, "XYZC"),
    ]
    return PoseHeader(version, Dimensions(int(width), int(height), 0), components)


def pose_file_bytes(landmarks: np.ndarray, width: int, height: int, fps: float) -> bytes:
    """(T, 543, 3) schema landmarks -> the bytes of a `.pose` file (pixels; confidence 0 where NaN)."""
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3):
        raise PoseFileError(f"landmarks must be (T, {NUM_LANDMARKS}, 3), got {landmarks.shape}")
    Pose, Body = _pose_format()[:2]
    lm = landmarks.astype(np.float32)
    ok = ~np.isnan(lm).any(axis=-1)  # (T, 543)
    pixels = np.where(ok[..., None], lm * np.array([width, height, 1], dtype=np.float32), 0.0)
    data = np.ma.masked_array(pixels[:, None], mask=np.repeat(~ok[:, None, :, None], 3, axis=-1))
    body = Body(fps=float(fps), data=data, confidence=ok[:, None].astype(np.float32))
    buf = io.BytesIO()
    Pose(_header(width, height), body).write(buf)
    return buf.getvalue()


def write_pose_file(path: str | os.PathLike, landmarks: np.ndarray, width: int, height: int, fps: float) -> None:
    """Write (T, 543, 3) schema landmarks as a `.pose` file, atomically."""
    atomic_write_bytes(path, pose_file_bytes(landmarks, width, height, fps))


def npy_bytes(landmarks: np.ndarray) -> bytes:
    """(T, K, C) landmarks -> `.npy` bytes, float16 (the schema's dtype)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(landmarks, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()
