"""The body: control channels -> skeleton (arm inverse kinematics, hand forward kinematics, a face mesh that
moves with the head and mouth) -> MediaPipe Holistic landmarks, and what a pose estimator would observe.
"""

from __future__ import annotations

import numpy as np

from ..render import FACE_OVAL
from ..schema import LANDMARK_SLICES, MOUTH
from .curves import smooth_noise
from .presets import SyntheticPreset
from .signers import Signer


# ----------------------------------------------------------------------------------------------------------
# Hands, arms, face: geometry in body units (shoulder width 1), x to the image right (the signer's left),
# y down, z away from the camera. Right-hand quantities; the left hand is computed as a right hand and
# mirrored (x -> -x), so a two-handed symmetric sign simply copies the right hand's controls.
# ----------------------------------------------------------------------------------------------------------

_FINGER_BASES = np.array([[0.10, -0.45, 0.0], [0.0, -0.47, 0.0], [-0.09, -0.44, 0.0], [-0.17, -0.39, 0.0]])
_FINGER_LENGTHS = np.array([[0.22, 0.13, 0.10], [0.25, 0.15, 0.11], [0.23, 0.14, 0.10], [0.17, 0.11, 0.09]])
_FINGER_SPLAY = np.array([0.12, 0.0, -0.12, -0.26])  # radians at spread 1 - 0.3
_FLEX = np.array([1.4, 1.7, 1.2])  # MCP, PIP, DIP flexion (radians) at curl 1
_THUMB_CMC = np.array([0.11, -0.09, -0.02])
_THUMB_LENGTHS = np.array([0.20, 0.16, 0.13])
_THUMB_FLEX = np.array([0.3, 0.7, 0.9])

REST = np.array((-0.55, 1.12, -0.08))  # arm hanging
REST_EULER = np.array((0.0, 1.3, 3.0))  # fingers down
IDLE = np.array((-0.3, 0.8, -0.35))  # hands low in front, waiting
IDLE_EULER = np.array((0.4, -0.6, 0.5))
BASE_HAND = np.array((-0.05, 0.6, -0.5))  # non-dominant base hand (mirrored coordinates)
_SHOULDER = np.array((-0.5, 0.0, 0.0))
_HIP = np.array((-0.32, 1.65, 0.05))
_HEAD = np.array((0.0, -0.66, -0.05))
_HEAD_SCALE = 0.65  # face template units -> body units
_ELBOW_POLE = np.array((-0.5, 1.0, 0.4)) / np.linalg.norm((-0.5, 1.0, 0.4))

# Control channels (T, C) that drive the skeleton.
C_RWRIST, C_LWRIST = slice(0, 3), slice(3, 6)
C_RSHAPE, C_LSHAPE = slice(6, 13), slice(13, 20)
C_REULER, C_LEULER = slice(20, 23), slice(23, 26)
C_MOUTH, C_HEAD_ROLL, C_HEAD_PITCH = 26, 27, 28
NUM_CONTROLS = 29


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hand_fk(shape: np.ndarray) -> np.ndarray:
    """Hand shapes (N, 7) -> the 21 MediaPipe hand landmarks (N, 21, 3) of a right hand in its own frame.

    Wrist at the origin, fingers along -y, palm facing -z (the camera); unit = hand length (wrist to middle tip).
    """
    n = len(shape)
    out = np.zeros((n, 21, 3))
    palm = np.array((0.0, 0.0, -1.0))
    splay = _FINGER_SPLAY * (0.3 + shape[:, 5:6])  # (N, 4)
    d0 = np.stack([np.sin(splay), -np.cos(splay), np.zeros_like(splay)], -1)  # (N, 4, 3)
    phi = np.cumsum(shape[:, 1:5, None] * _FLEX, axis=-1)  # (N, 4, 3) cumulative joint angles
    seg = np.cos(phi)[..., None] * d0[:, :, None] + np.sin(phi)[..., None] * palm  # (N, 4, 3, 3)
    joints = _FINGER_BASES[None, :, None] + np.cumsum(seg * _FINGER_LENGTHS[None, :, :, None], axis=2)
    for f in range(4):  # index 5-8, middle 9-12, ring 13-16, pinky 17-20: MCP then 3 joints
        out[:, 5 + 4 * f] = _FINGER_BASES[f]
        out[:, 6 + 4 * f: 9 + 4 * f] = joints[:, f]
    opp = shape[:, 6:7]
    t0 = _normalize(np.concatenate([0.75 - 1.1 * opp, -0.65 + 0.15 * opp, -0.15 - 0.5 * opp], -1))  # (N, 3)
    bend = np.array((-0.5, -0.1, -0.85))
    bend = _normalize(bend - (t0 @ bend)[:, None] * t0)  # (N, 3) orthogonal to the thumb direction
    phi_t = np.cumsum(shape[:, 0:1] * _THUMB_FLEX, axis=-1)  # (N, 3)
    seg_t = np.cos(phi_t)[..., None] * t0[:, None] + np.sin(phi_t)[..., None] * bend[:, None]  # (N, 3, 3)
    out[:, 1] = _THUMB_CMC
    out[:, 2:5] = _THUMB_CMC + np.cumsum(seg_t * _THUMB_LENGTHS[None, :, None], axis=1)
    return out


def euler_matrix(euler: np.ndarray) -> np.ndarray:
    """(N, 3) (pitch, yaw, roll) -> (N, 3, 3) rotation Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    (cp, cy, cr), (sp, sy, sr) = np.cos(euler).T, np.sin(euler).T
    one, zero = np.ones_like(cp), np.zeros_like(cp)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def two_bone_ik(shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float) -> tuple[np.ndarray, np.ndarray]:
    """Elbow for a right arm (N, 3) and the reachable wrist (N, 3); the elbow bends down, out and back."""
    v = wrist - shoulder
    dist = np.linalg.norm(v, axis=-1, keepdims=True)
    u = v / np.maximum(dist, 1e-6)
    d = np.clip(dist, abs(upper - fore) + 1e-3, (upper + fore) * 0.999)  # (N, 1)
    x = (upper ** 2 - fore ** 2 + d ** 2) / (2 * d)
    h = np.sqrt(np.maximum(upper ** 2 - x ** 2, 0.0))
    pole = _normalize(_ELBOW_POLE - (u @ _ELBOW_POLE)[:, None] * u)
    return shoulder + u * x + pole * h, shoulder + u * d


# MediaPipe face-mesh eye contours, starting at the outer corner (263 / 33); the inner corners are 362 / 133.
EYE_LEFT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
EYE_RIGHT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)


def _face_template() -> tuple[np.ndarray, np.ndarray]:
    """A fixed plausible 468-point face mesh (head units, centred) and its lower-lip mask; part of the format."""
    rng = np.random.default_rng(468)  # fixed: the same face layout for every corpus
    r = np.sqrt(rng.uniform(0, 1, 468))
    a = rng.uniform(0, 2 * np.pi, 468)
    pts = np.stack([0.38 * r * np.sin(a), 0.5 * r * np.cos(a), np.zeros(468)], -1)
    ang = np.arange(len(FACE_OVAL)) / len(FACE_OVAL) * 2 * np.pi
    pts[list(FACE_OVAL), 0], pts[list(FACE_OVAL), 1] = 0.42 * np.sin(ang), -0.55 * np.cos(ang)
    ang = np.arange(16) / 16 * 2 * np.pi
    for eye, side in ((EYE_LEFT, 1.0), (EYE_RIGHT, -1.0)):  # the first point is the outer corner
        pts[list(eye), 0], pts[list(eye), 1] = side * (0.16 + 0.07 * np.cos(ang)), -0.08 + 0.03 * np.sin(ang)
    ang = np.arange(len(MOUTH)) / len(MOUTH) * 2 * np.pi
    pts[list(MOUTH), 0], pts[list(MOUTH), 1] = 0.14 * np.cos(ang), 0.28 + 0.04 * np.sin(ang)
    pts[[1, 4], 0], pts[[1, 4], 1] = 0.0, (0.1, 0.06)  # nose tip
    pts[:, 2] = -0.25 * np.sqrt(np.clip(1 - (pts[:, 0] / 0.45) ** 2 - (pts[:, 1] / 0.6) ** 2, 0, 1))
    pts[[1, 4], 2] -= 0.12
    lower_lip = np.zeros(468, bool)
    lower_lip[list(MOUTH)] = np.sin(ang) > 0
    return pts, lower_lip


FACE_TEMPLATE, LOWER_LIP = _face_template()


# ----------------------------------------------------------------------------------------------------------
# Skeleton -> landmarks -> observation
# ----------------------------------------------------------------------------------------------------------

def skeleton(ctrl: np.ndarray, signer: Signer, frame_size: tuple, rng: np.random.Generator) -> np.ndarray:
    """Controls (T, C) -> clean Holistic landmarks (T, 543, 3): x, y normalised to the image, z (larger = farther)
    relative to the hips for the body, to the wrist for each hand, to the face centre for the face."""
    n = len(ctrl)
    sway = smooth_noise(rng, n, 3, 0.015, corr=15.0)  # (T, 3) torso sway
    mirror = np.array((-1.0, 1.0, 1.0))
    # Both arms as right arms: rows [0, T) right, [T, 2T) left in mirrored coordinates.
    shoulder = np.concatenate([_SHOULDER + sway, _SHOULDER + sway * mirror])  # (2T, 3)
    wrist = np.concatenate([ctrl[:, C_RWRIST] + sway, ctrl[:, C_LWRIST] + sway * mirror])
    elbow, wrist = two_bone_ik(shoulder, wrist, signer.upper_arm, signer.forearm)
    shape = np.concatenate([ctrl[:, C_RSHAPE], ctrl[:, C_LSHAPE]])
    rot = euler_matrix(np.concatenate([ctrl[:, C_REULER], ctrl[:, C_LEULER]]))  # (2T, 3, 3)
    hand = wrist[:, None] + np.einsum("nij,nkj->nki", rot, hand_fk(shape)) * signer.hand  # (2T, 21, 3)
    r, l = slice(0, n), slice(n, 2 * n)
    # Head: the face template rotated by tilt (roll), nod (pitch) and a little yaw, scaled and placed.
    head_rot = euler_matrix(np.stack([ctrl[:, C_HEAD_PITCH], 0.5 * ctrl[:, C_HEAD_ROLL], ctrl[:, C_HEAD_ROLL]], -1))
    face = FACE_TEMPLATE[None].repeat(n, 0)  # (T, 468, 3)
    face[:, LOWER_LIP, 1] += 0.06 * ctrl[:, C_MOUTH, None]
    head_c = _HEAD + sway * 1.3
    face = head_c[:, None] + np.einsum("nij,nkj->nki", head_rot, face) * _HEAD_SCALE
    body = np.zeros((n, 33, 3))
    body[:, 0] = face[:, 1]  # nose
    for i, eye in ((1, EYE_LEFT), (4, EYE_RIGHT)):  # eye inner, centre, outer: left 1-3, right 4-6
        body[:, i], body[:, i + 1], body[:, i + 2] = face[:, eye[8]], face[:, list(eye)].mean(1), face[:, eye[0]]
    ear = head_rot @ np.array((0.45, -0.02, 0.1)) * _HEAD_SCALE  # (T, 3) left ear offset, mirrored for the right
    body[:, 7], body[:, 8] = head_c + ear, head_c + ear * mirror
    body[:, 9], body[:, 10] = face[:, MOUTH[0]], face[:, MOUTH[len(MOUTH) // 2]]  # mouth left, right corners
    body[:, 12], body[:, 11] = shoulder[r], shoulder[l] * mirror
    body[:, 14], body[:, 13] = elbow[r], elbow[l] * mirror
    body[:, 16], body[:, 15] = wrist[r], wrist[l] * mirror
    rh, lh = hand[r], hand[l] * mirror
    body[:, 18], body[:, 17] = rh[:, 17], lh[:, 17]  # pinky, index, thumb points of the pose model
    body[:, 20], body[:, 19] = rh[:, 5], lh[:, 5]
    body[:, 22], body[:, 21] = rh[:, 2], lh[:, 2]
    hips = _HIP + sway * 0.3
    body[:, 24], body[:, 23] = hips, hips * mirror
    for i, dy in ((25, 0.95), (27, 1.9), (29, 2.0), (31, 2.05)):  # legs, below the frame
        body[:, i + 1], body[:, i] = hips + (0, dy, 0), hips * mirror + (0, dy, 0)
    pts = np.concatenate([body, face, lh, rh], axis=1)  # (T, 543, 3) body units
    h, w = frame_size
    out = np.empty_like(pts)
    out[..., 0] = signer.cx + pts[..., 0] * signer.scale
    out[..., 1] = signer.cy + pts[..., 1] * signer.scale * w / h
    z = pts[..., 2] * signer.scale
    out[..., 2] = z - z[:, [23, 24]].mean(1, keepdims=True)
    return out


def relative_z(landmarks: np.ndarray) -> np.ndarray:
    """Hands' z relative to their wrist and the face's to its centre, as MediaPipe reports them."""
    out = landmarks.copy()
    for part in ("left_hand", "right_hand"):
        sl = LANDMARK_SLICES[part]
        out[:, sl, 2] -= landmarks[:, sl.start:sl.start + 1, 2]
    sl = LANDMARK_SLICES["face"]
    out[:, sl, 2] -= landmarks[:, sl, 2].mean(1, keepdims=True)
    return out


# Observation model, calibrated against real MediaPipe Holistic landmarks of PHOENIX-2014-T
# (`tests/test_synthetic_realism.py` compares the two): the body and face models are steadier than the hand model;
# a hand low in the frame (at rest, partly below the picture) or leaving it is not detected; while signing, a
# hand's tracking is lost in runs of several frames, more readily in fast motion (blur).
BODY_NOISE = 0.3  # body and face landmark noise, as a fraction of the preset's (hand) landmark_noise
LOW_HAND_Y = 0.86  # wrist height (normalised image y) where a low hand is missed half the time ...
LOW_HAND_WIDTH = 0.02  # ... over this soft band (logistic scale)
LOST_RUN = 7.0  # mean length (frames) of a run of lost hand tracking while signing


def _lost_runs(hazard: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A two-state (tracked / lost) chain: enter 'lost' with probability hazard[t], leave it with 1 / LOST_RUN."""
    draws = rng.random(len(hazard))
    lost = np.zeros(len(hazard), bool)
    state = False
    for t, u in enumerate(draws):
        state = u < (1 - 1 / LOST_RUN if state else hazard[t])
        lost[t] = state
    return lost


def observe(landmarks: np.ndarray, signer: Signer, preset: SyntheticPreset, rng: np.random.Generator) -> np.ndarray:
    """What a pose estimator would report: noise, hands sometimes undetected (NaN), float16 (T, 543, 3)."""
    n = len(landmarks)
    sigma = preset.landmark_noise * signer.noise
    noise = rng.normal(0, sigma, landmarks.shape)
    noise[:, :LANDMARK_SLICES["left_hand"].start] *= BODY_NOISE
    pose = relative_z(landmarks) + noise
    f = preset.missing_hand_rate * signer.missing  # lost-tracking share while signing at average speed
    for part in ("left_hand", "right_hand"):
        sl = LANDMARK_SLICES[part]
        pose[:, sl, :2] += rng.normal(0, sigma, (n, 1, 2))  # the whole hand jitters too
        wrist = landmarks[:, sl.start, :2]  # (T, 2)
        speed = np.linalg.norm(np.diff(wrist, axis=0, prepend=wrist[:1]), axis=-1)
        blur = np.clip(0.4 + 0.6 * speed / max(speed.mean(), 1e-6), 0, 3)
        missing = _lost_runs(np.clip(f / (LOST_RUN * (1 - f)) * blur, 0, 1), rng)
        low = 1 / (1 + np.exp(-(wrist[:, 1] - LOW_HAND_Y) / LOW_HAND_WIDTH))
        outside = ((landmarks[:, sl, :2] < 0) | (landmarks[:, sl, :2] > 1)).any(-1).mean(-1)  # share of the hand
        missing |= rng.random(n) < np.maximum(low, 2 * outside)
        missing |= ((wrist < 0) | (wrist > 1)).any(-1)  # out of the picture
        pose[missing, sl] = np.nan
    return pose.astype(np.float16)
