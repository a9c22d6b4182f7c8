"""The built-in procedural synthetic corpus: PHOENIX-2014-like sign videos + MediaPipe Holistic poses.

    python launch/prepare.py synthetic --preset small --out data/synth --workers 2   # the default training data
    python launch/prepare.py synthetic --preset tiny --out /tmp/synth_tiny            # tests, ~1 s
    python launch/prepare.py synthetic --preset phoenix --out data/synth_phoenix --preview preview.png
    python launch/prepare.py synthetic --preset phoenix --out data/synth_phoenix --workers 16 --held-out-signer 5

How a video is made (everything is drawn from `seed`; a sample depends only on its own seed, so shards are
byte-identical for a seed and preset whatever the number of workers):

1. Inventory: each gloss is a motion primitive of both hands = a *trajectory* (start location relative to the
   body, movement line/arc/circle/zigzag/tap/twist/trill, direction, amplitude, palm orientation, one- or
   two-handed: mirrored, alternating, on a base hand) x a *hand shape* (finger flexion, spread, thumb).
   Glosses are laid out on the trajectory x shape grid so that several glosses share a trajectory and differ
   only in hand shape, and several share a shape and differ only in trajectory: both modalities matter.
   Names are German-weather-like (REGEN, loc-NORD, NORDRAUM, WEHEN-PLUSPLUS, cl-KOMMEN, ...), plus the
   PHOENIX tokens __ON__ / __OFF__ (hands rise from / drop to the rest position), __EMOTION__ (face),
   __PU__ (palms up) and __LEFTHAND__ (left-hand gesture), so the official scoring rules are exercised.
2. Sentences: a gloss-bigram grammar over a Zipf unigram; __ON__ / __OFF__ frame a sentence only sometimes.
3. Timeline: per-instance speed (+-`speed_variation`) x per-signer speed, gloss durations, co-articulation
   (interpolated transitions, then temporal smoothing: no clean boundaries), idle frames at both ends.
4. Skeleton: arm inverse kinematics, hand forward kinematics (21 MediaPipe hand points), a cheap face mesh
   (468 points) that moves with the head and mouth, per-signer body size / position / proportions.
5. Observation: `pose.npy` = landmarks + noise, a hand sometimes not detected (all 21 points NaN, more
   often during fast motion, in bursts); `rgb.jpgs` = frames drawn from the clean skeleton on the
   signer's background (`cslr.datasets.render`), with sensor noise, JPEG-compressed.

Difficulty knobs are preset fields (landmark_noise, missing_hand_rate, speed_variation, coart_frames, ...).
The `phoenix` preset matches PHOENIX-2014's statistics (videos per split, frames and glosses per sentence,
~1,230 train glosses, 9 signers, 260x210 frames); `corpus_statistics` checks them without rendering.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..render import Style, make_background, render_frames
from ..schema import LANDMARK_SLICES, MOUTH, NUM_LANDMARKS, POSE_LAYOUT, VideoSample
from ..vocab import Vocabulary
from cslr.io import atomic_write_json, cache_dir, read_json_record, sha256_file
from ..writer import MANIFEST, VOCAB, shard_name, write_shard

SPLITS = ("train", "dev", "test")
FPS = 25
GENERATOR_VERSION = 1  # bump when the generated data changes for the same seed and preset

ON, OFF, EMOTION, PU, LEFTHAND = "__ON__", "__OFF__", "__EMOTION__", "__PU__", "__LEFTHAND__"


# ----------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticPreset:
    """Size and difficulty of a synthetic corpus. Frame counts are at 25 fps; body units: shoulder width = 1."""

    name: str
    num_videos: dict  # split -> number of videos
    frame_size: tuple  # (H, W) stored frames
    shard_size: int  # videos per shard
    num_signers: int
    vocab_size: int  # glosses in the inventory, the special __X__ tokens excluded
    num_trajectories: int  # distinct trajectories; glosses sharing one differ only in hand shape
    num_shapes: int  # distinct hand shapes (<= len(HAND_SHAPES))
    zipf: float  # unigram exponent: p(rank r) ~ 1 / (r + zipf_offset) ** zipf
    zipf_offset: float  # flattens the head of the Zipf curve
    bigram_weight: float  # probability that the next gloss follows the previous gloss's preferred successors
    successors: int  # preferred successors per gloss
    glosses_mean: float  # glosses per sentence, __ON__ / __OFF__ excluded: discretised normal ...
    glosses_std: float
    glosses_min: int  # ... truncated to [min, max]
    glosses_max: int
    p_on: float  # sentence starts with __ON__
    p_off: float  # sentence ends with __OFF__
    p_special: dict  # token -> probability that a gloss slot holds it (__EMOTION__, __PU__, __LEFTHAND__)
    gloss_frames: tuple  # (min, max) frames of a gloss at speed 1, drawn per gloss
    coart_frames: float  # transition frames between glosses at speed 1
    idle_frames: tuple  # (min, max) idle frames at each end
    min_frames: int  # shorter videos get more idle frames
    max_frames: int  # longer videos are played faster
    speed_variation: float  # per-instance speed factor ~ U(1 - v, 1 + v)
    signer_speed_variation: float  # per-signer speed factor ~ U(1 - v, 1 + v)
    signer_alpha: float  # Dirichlet concentration of the signers' share of train (large = balanced)
    smooth_sigma: float  # temporal Gaussian smoothing of the controls (frames): co-articulation
    landmark_noise: float  # std of landmark noise, in normalised image units
    missing_hand_rate: float  # mean fraction of frames where a hand is not detected (NaN)
    pixel_noise: float  # std of RGB sensor noise (0..255)
    jpeg_quality: int
    supersample: int  # draw at this factor x frame size, then box-filter down
    body_scale: float  # shoulder width / frame width
    body_y: float  # shoulder line height / frame height


PRESETS: dict[str, SyntheticPreset] = {
    "tiny": SyntheticPreset(
        name="tiny", num_videos={"train": 36, "dev": 8, "test": 8}, frame_size=(32, 32), shard_size=16,
        num_signers=3, vocab_size=10, num_trajectories=5, num_shapes=5, zipf=0.3, zipf_offset=2.0,
        bigram_weight=0.3, successors=3, glosses_mean=2.5, glosses_std=0.8, glosses_min=2, glosses_max=3, p_on=0.6, p_off=0.6,
        p_special={EMOTION: 0.05, PU: 0.05, LEFTHAND: 0.0}, gloss_frames=(5, 7), coart_frames=1.5,
        idle_frames=(1, 3), min_frames=20, max_frames=40, speed_variation=0.3, signer_speed_variation=0.1,
        signer_alpha=50.0, smooth_sigma=0.8, landmark_noise=0.003, missing_hand_rate=0.08, pixel_noise=4.0,
        jpeg_quality=88, supersample=2, body_scale=0.36, body_y=0.5,
    ),
    "small": SyntheticPreset(
        name="small", num_videos={"train": 1200, "dev": 120, "test": 120}, frame_size=(64, 64), shard_size=100,
        num_signers=4, vocab_size=48, num_trajectories=16, num_shapes=10, zipf=0.4, zipf_offset=2.0,
        bigram_weight=0.4, successors=6, glosses_mean=5.0, glosses_std=1.4, glosses_min=3, glosses_max=7,
        p_on=0.65, p_off=0.65,
        p_special={EMOTION: 0.015, PU: 0.015, LEFTHAND: 0.005}, gloss_frames=(6, 9), coart_frames=2.0,
        idle_frames=(2, 5), min_frames=24, max_frames=96, speed_variation=0.3, signer_speed_variation=0.1,
        signer_alpha=50.0, smooth_sigma=1.0, landmark_noise=0.003, missing_hand_rate=0.04, pixel_noise=4.0,
        jpeg_quality=88, supersample=2, body_scale=0.36, body_y=0.5,
    ),
    # PHOENIX-2014 (multi-signer): 5,672 / 540 / 629 videos, 9 unbalanced signers, 260x210 frames, mean 141
    # frames (27..299), mean 11.5 glosses (2..28) with __ON__ / __OFF__ in ~43% / ~46% of sentences,
    # ~1,230 distinct train glosses with a long tail. Calibrated with `corpus_statistics`.
    "phoenix": SyntheticPreset(
        name="phoenix", num_videos={"train": 5672, "dev": 540, "test": 629}, frame_size=(260, 210),
        shard_size=200, num_signers=9, vocab_size=1750, num_trajectories=180, num_shapes=13, zipf=1.95,
        zipf_offset=20.0, bigram_weight=0.3, successors=12, glosses_mean=10.5, glosses_std=3.4, glosses_min=2,
        glosses_max=26, p_on=0.43, p_off=0.46, p_special={EMOTION: 0.015, PU: 0.014, LEFTHAND: 0.007},
        gloss_frames=(5, 10), coart_frames=2.2, idle_frames=(4, 22), min_frames=27, max_frames=299,
        speed_variation=0.3, signer_speed_variation=0.15, signer_alpha=2.0, smooth_sigma=1.0,
        landmark_noise=0.003, missing_hand_rate=0.06, pixel_noise=4.0, jpeg_quality=88, supersample=1,
        body_scale=0.42, body_y=0.42,
    ),
}


# ----------------------------------------------------------------------------------------------------------
# Gloss names
# ----------------------------------------------------------------------------------------------------------

_CORE = (
    "REGEN SONNE WOLKE SCHNEE WIND STURM NEBEL GEWITTER SCHAUER FROST GRAD TEMPERATUR WARM KALT KUEHL MILD HEISS "
    "TROCKEN NASS GLATT KLAR FREUNDLICH WECHSELHAFT BEWOELKT HEITER MORGEN HEUTE GESTERN ABEND NACHT MITTAG TAG "
    "WOCHE WOCHENENDE MONTAG DIENSTAG MITTWOCH DONNERSTAG FREITAG SAMSTAG SONNTAG JETZT DANN SPAETER BIS AUCH MEHR "
    "WENIG VIEL NUR NOCH SCHON ABER UND ODER WIE WETTER REGION LAND KUESTE BERG MEER SEE FLUSS ALPEN HIMMEL LUFT "
    "DRUCK HOCH TIEF ZONE GRENZE MITTE STARK SCHWACH MAESSIG LEICHT BISSCHEN KOMMEN BLEIBEN STEIGEN SINKEN WEHEN "
    "SCHEINEN VERSCHWINDEN AUFLOESEN GEFRIEREN SCHNEIEN ZEIGEN SEHEN KOENNEN MOEGLICH MEISTENS TEILWEISE IX "
    "MINUS PLUS ORKAN HAGEL GLATTEIS SCHAUER WARNUNG UNWETTER WALD TAL ZUSCHAUER LIEB"
).split()
_DIRECTIONS = "NORD SUED OST WEST NORDOST NORDWEST SUEDOST SUEDWEST".split()
_UNITS = "NULL EINS ZWEI DREI VIER FUENF SECHS SIEBEN ACHT NEUN".split()
_TEENS = "ZEHN ELF ZWOELF DREIZEHN VIERZEHN FUENFZEHN SECHSZEHN SIEBZEHN ACHTZEHN NEUNZEHN".split()
_TENS = "ZWANZIG DREISSIG VIERZIG FUENFZIG SECHZIG SIEBZIG ACHTZIG NEUNZIG".split()
_VERBS = "KOMMEN ZIEHEN FALLEN STEIGEN DREHEN LIEGEN".split()
_POSS = "EUCH MEIN SEIN BEI-UNS".split()
_MODIFIERS = (
    "NICHT VIEL WENIG STARK LEICHT IM KURZ LANG HOCH TIEF NEU WIE ERST SPAET FRUEH OFT SELTEN GANZ HALB MEHR "
    "NACH VOR UEBER UNTER ZWISCHEN OHNE MIT BIS AB AN"
).split()
_NOUNS = (
    "WIND WOLKE REGEN SCHNEE FRONT LUFT NACHT TAG WETTER GEBIET KUESTE ZONE SONNE NEBEL STURM BERG TAL LAND "
    "MORGEN ABEND AUSSEHEN VERLAUF WECHSEL BODEN HIMMEL BLITZ DONNER HAGEL FROST TAU EIS GRAD DRUCK HOCH TIEF "
    "MEER SEE FLUSS WALD STADT"
).split()
_ACTIONS = "KOMMEN GEHEN ZIEHEN FALLEN STEIGEN SINKEN DREHEN BLEIBEN WERDEN SEHEN ZEIGEN RUNTER RAUF WEG".split()


def _number_words() -> list[str]:
    """German number glosses 0..99 as single tokens (ZWEIUNDZWANZIG style, like PHOENIX's ZWEIZWANZIG)."""
    words = _UNITS + _TEENS
    for tens in _TENS:
        words.append(tens)
        words += [f"{'EIN' if u == 'EINS' else u}UND{tens}" for u in _UNITS[1:]]
    return words


def gloss_names(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct PHOENIX-like gloss names, frequent-looking words first, with prefixed forms mixed in.

    About 7% `loc-X`, 4% `X-PLUSPLUS`, 1.5% `XRAUM` (direction + RAUM), 1% `cl-X`, 0.5% `poss-X` (at least one
    each of the first three once n >= 8, so the scoring rules that rewrite them are exercised).
    """
    plain = list(dict.fromkeys(_CORE + _DIRECTIONS))
    rng.shuffle(plain)
    extra = _number_words() + [d + w for d in _DIRECTIONS for w in ("WIND", "KUESTE", "HANG", "SEITE")]
    extra += [f"{m}-{w}" for m in _MODIFIERS for w in _NOUNS] + [f"{w}-{a}" for w in _NOUNS for a in _ACTIONS]
    extra = list(dict.fromkeys(e for e in extra if e not in plain))
    rng.shuffle(extra)
    pool = plain + extra
    quota = {
        "loc": max(1 if n >= 8 else 0, round(0.07 * n)), "plus": max(1 if n >= 8 else 0, round(0.04 * n)),
        "raum": max(1 if n >= 8 else 0, round(0.015 * n)), "cl": max(1 if n >= 30 else 0, round(0.01 * n)),
        "poss": round(0.005 * n),
    }
    prefixed = (
        [f"loc-{w}" for w in rng.permutation(_DIRECTIONS + ["REGION", "LAND", "ZONE", "ALPEN", "KUESTE"]
                                             + [w for w in extra if "-" not in w])[:quota["loc"]]]
        + [f"{w}-PLUSPLUS" for w in rng.permutation(plain)[:quota["plus"]]]
        + [f"{d}RAUM" for d in rng.permutation(_DIRECTIONS)[:quota["raum"]]]
        + [f"cl-{w}" for w in rng.permutation(_VERBS)[:quota["cl"]]]
        + [f"poss-{w}" for w in rng.permutation(_POSS)[:quota["poss"]]]
    )
    prefixed = [w for w in dict.fromkeys(prefixed) if w not in pool[:n]]
    names = pool[: max(0, n - len(prefixed))]
    if len(names) + len(prefixed) < n:
        raise ValueError(f"cannot make {n} distinct gloss names (at most {len(names) + len(prefixed)})")
    # The order is the Zipf frequency rank: plain words first, prefixed forms spread over all ranks.
    for w, i in zip(prefixed, np.sort(rng.choice(n, size=len(prefixed), replace=False))):
        names.insert(int(i), w)
    return names[:n]


# ----------------------------------------------------------------------------------------------------------
# Hands, arms, face: geometry in body units (shoulder width 1), x to the image right (the signer's left),
# y down, z away from the camera. Right-hand quantities; the left hand is computed as a right hand and
# mirrored (x -> -x), so a two-handed symmetric sign simply copies the right hand's controls.
# ----------------------------------------------------------------------------------------------------------

# Hand shape = (thumb curl, index, middle, ring, pinky curl, finger spread, thumb opposition), each 0..1.
HAND_SHAPES = {
    "B": (0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6),
    "5": (0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "S": (0.8, 1.0, 1.0, 1.0, 1.0, 0.0, 0.9),
    "1": (0.7, 0.0, 1.0, 1.0, 1.0, 0.2, 0.8),
    "V": (0.7, 0.0, 0.0, 1.0, 1.0, 0.9, 0.8),
    "Y": (0.0, 1.0, 1.0, 1.0, 0.0, 0.6, 0.0),
    "L": (0.0, 0.0, 1.0, 1.0, 1.0, 0.3, 0.0),
    "C": (0.3, 0.45, 0.45, 0.45, 0.45, 0.1, 0.4),
    "A": (0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0),  # thumb up
    "W": (0.7, 0.0, 0.0, 0.0, 1.0, 0.9, 0.9),
    "O": (0.5, 0.7, 0.7, 0.7, 0.7, 0.0, 1.0),
    "I": (0.7, 1.0, 1.0, 1.0, 0.0, 0.0, 0.8),
    "H": (0.7, 0.0, 1.0, 1.0, 0.0, 0.6, 0.8),  # horns
}
RELAXED = np.array((0.2, 0.25, 0.3, 0.35, 0.4, 0.3, 0.3))
_FINGER_BASES = np.array([[0.10, -0.45, 0.0], [0.0, -0.47, 0.0], [-0.09, -0.44, 0.0], [-0.17, -0.39, 0.0]])
_FINGER_LENGTHS = np.array([[0.22, 0.13, 0.10], [0.25, 0.15, 0.11], [0.23, 0.14, 0.10], [0.17, 0.11, 0.09]])
_FINGER_SPLAY = np.array([0.12, 0.0, -0.12, -0.26])  # radians at spread 1 - 0.3
_FLEX = np.array([1.4, 1.7, 1.2])  # MCP, PIP, DIP flexion (radians) at curl 1
_THUMB_CMC = np.array([0.11, -0.09, -0.02])
_THUMB_LENGTHS = np.array([0.20, 0.16, 0.13])
_THUMB_FLEX = np.array([0.3, 0.7, 0.9])

# Palm orientations as (pitch, yaw, roll) radians; identity = palm to the camera, fingers up.
ORIENTATIONS = ((0.0, 0.0, 0.0), (0.0, -1.3, 0.0), (1.3, 0.0, 0.0), (1.3, 0.0, 3.0), (0.0, 0.0, -1.1),
                (0.0, -0.7, 0.9))
# Right-wrist start locations (body units; the neck base is the origin).
ANCHORS = {
    "neutral": (-0.22, 0.55, -0.55), "high": (-0.25, 0.15, -0.6), "low": (-0.3, 0.8, -0.45),
    "chin": (-0.08, -0.3, -0.45), "forehead": (-0.12, -0.9, -0.4), "temple": (-0.4, -0.75, -0.3),
    "chest": (-0.08, 0.35, -0.3), "side": (-0.75, 0.45, -0.35), "shoulder": (0.3, 0.1, -0.3),
    "far": (-0.3, 0.3, -0.85),
}
MOVEMENTS = ("line", "arc", "circle", "zigzag", "tap", "twist", "trill")
DIRECTIONS = tuple(np.array(d, dtype=np.float64) / np.linalg.norm(d) for d in (
    (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (1, 1, 0), (-1, 1, 0), (1, -1, 0), (-1, -1, 0), (0, 0, -1),
    (0.3, 0.3, -1)))
TWO_HANDED = ("one", "mirror", "alternate", "base")
TWO_HANDED_P = (0.5, 0.2, 0.15, 0.15)

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


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


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
    from ..render import FACE_OVAL

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
# Signs (glosses as motion primitives) and the grammar
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trajectory:
    anchor: str
    movement: str
    direction: int  # index into DIRECTIONS
    amplitude: float  # body units
    orientation: int  # index into ORIENTATIONS
    two_handed: str  # one of TWO_HANDED, or "left" (__LEFTHAND__), "rise" / "drop" (__ON__ / __OFF__)


@dataclass(frozen=True)
class Sign:
    """A gloss: a trajectory x a hand shape, a base duration (frames at speed 1) and a mouthing."""

    name: str
    trajectory: Trajectory
    shape: str  # key of HAND_SHAPES, or "relaxed"
    frames: int
    mouth: float  # mouth opening 0..1
    syllables: int
    emotion: bool = False  # head tilt + open mouth (__EMOTION__)


def _movement(kind: str, t: np.ndarray, amp: float, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (n, 3) along a movement and an extra wrist roll (n,), for t in [0, 1]."""
    p = np.array((-d[1], d[0], 0.0)) if abs(d[2]) < 0.9 else np.array((0.0, -1.0, 0.0))
    p = p / np.linalg.norm(p)
    e = _smoothstep(t)[:, None]
    roll = np.zeros_like(t)
    if kind == "line":
        disp = amp * e * d
    elif kind == "arc":
        disp = amp * (e * d + 0.4 * np.sin(np.pi * e) * p)
    elif kind == "circle":
        a = 2 * np.pi * e
        disp = 0.5 * amp * ((1 - np.cos(a)) * d + np.sin(a) * p)
    elif kind == "zigzag":
        disp = amp * (e * d + 0.25 * np.sin(6 * np.pi * t)[:, None] * p)
    elif kind == "tap":  # two strokes out and back
        disp = 0.6 * amp * np.sin(2 * np.pi * t)[:, None] ** 2 * d
    elif kind == "twist":
        disp = 0.25 * amp * e * d
        roll = 1.4 * e[:, 0]
    elif kind == "trill":  # hand held, shaking
        disp = 0.15 * amp * np.sin(8 * np.pi * t)[:, None] * p
    else:
        raise ValueError(f"unknown movement {kind!r}")
    return disp, roll


def sign_controls(sign: Sign, n: int, rng: np.random.Generator) -> np.ndarray:
    """The (n, NUM_CONTROLS) controls of one instance of `sign` lasting n frames, with instance jitter."""
    tr = sign.trajectory
    t = np.linspace(0.0, 1.0, n)
    c = np.zeros((n, NUM_CONTROLS))
    shape = RELAXED if sign.shape == "relaxed" else np.array(HAND_SHAPES[sign.shape])
    shape = np.clip(shape + rng.normal(0, 0.04, 7), 0, 1)
    euler = np.array(ORIENTATIONS[tr.orientation]) + rng.normal(0, 0.08, 3)
    d = DIRECTIONS[tr.direction] + rng.normal(0, 0.08, 3)
    disp, roll = _movement(tr.movement, t, tr.amplitude * rng.uniform(0.85, 1.15), d / np.linalg.norm(d))
    anchor = np.array(ANCHORS[tr.anchor]) + rng.normal(0, 0.03, 3)
    idle = IDLE + rng.normal(0, 0.03, 3)
    active, passive = anchor + disp, np.repeat(idle[None], n, 0)
    c[:, C_RSHAPE], c[:, C_LSHAPE] = shape, RELAXED
    c[:, C_REULER], c[:, C_LEULER] = euler, IDLE_EULER
    c[:, C_REULER.start + 2] += roll
    if tr.two_handed == "rise":
        active = passive = REST + _smoothstep(t)[:, None] * (IDLE - REST)
        c[:, C_REULER] = c[:, C_LEULER] = REST_EULER + _smoothstep(t)[:, None] * (IDLE_EULER - REST_EULER)
    elif tr.two_handed == "drop":
        active = passive = IDLE + _smoothstep(t)[:, None] * (REST - IDLE)
        c[:, C_REULER] = c[:, C_LEULER] = IDLE_EULER + _smoothstep(t)[:, None] * (REST_EULER - IDLE_EULER)
    elif tr.two_handed == "mirror":
        passive = active
        c[:, C_LSHAPE], c[:, C_LEULER] = c[:, C_RSHAPE], c[:, C_REULER]
    elif tr.two_handed == "alternate":
        passive = anchor + disp[::-1]
        c[:, C_LSHAPE], c[:, C_LEULER] = c[:, C_RSHAPE], c[:, C_REULER]
    elif tr.two_handed == "base":  # dominant hand acts just above a flat, palm-up base hand
        base = BASE_HAND + rng.normal(0, 0.02, 3)
        active, passive = base + np.array((0.0, -0.2, -0.02)) + disp, np.repeat(base[None], n, 0)
        c[:, C_LSHAPE], c[:, C_LEULER] = HAND_SHAPES["B"], ORIENTATIONS[3]
    elif tr.two_handed == "left":  # the left hand signs, the right waits
        active, passive = passive, active
        c[:, C_RSHAPE], c[:, C_LSHAPE] = RELAXED, shape
        c[:, C_REULER], c[:, C_LEULER] = IDLE_EULER, c[:, C_REULER].copy()
    c[:, C_RWRIST], c[:, C_LWRIST] = active, passive
    c[:, C_MOUTH] = sign.mouth * np.abs(np.sin(np.pi * sign.syllables * t))
    if sign.emotion:
        c[:, C_MOUTH] = 0.9 * np.sin(np.pi * t)
        c[:, C_HEAD_ROLL] = 0.25 * np.sin(np.pi * t)
        c[:, C_HEAD_PITCH] = -0.2 * np.sin(np.pi * t)
    return c


def _special_signs(preset: SyntheticPreset) -> list[Sign]:
    mid = int(round(np.mean(preset.gloss_frames)))
    return [
        Sign(ON, Trajectory("neutral", "line", 0, 0.0, 0, "rise"), "relaxed", mid, 0.0, 1),
        Sign(OFF, Trajectory("neutral", "line", 0, 0.0, 0, "drop"), "relaxed", mid, 0.0, 1),
        Sign(EMOTION, Trajectory("low", "trill", 2, 0.05, 1, "mirror"), "relaxed", mid, 0.9, 1, emotion=True),
        Sign(PU, Trajectory("low", "line", 1, 0.2, 3, "mirror"), "5", mid, 0.0, 1),
        Sign(LEFTHAND, Trajectory("neutral", "tap", 8, 0.25, 1, "left"), "1", mid, 0.0, 1),
    ]


def _trajectories(n: int, rng: np.random.Generator) -> list[Trajectory]:
    """`n` distinct trajectories, cycling through anchors and movements so that they stay well apart."""
    anchors, out, seen = list(ANCHORS), [], set()
    a_perm, m_perm = rng.permutation(len(anchors)), rng.permutation(len(MOVEMENTS))
    i = 0
    while len(out) < n:
        anchor = anchors[a_perm[i % len(anchors)]]
        movement = MOVEMENTS[m_perm[(i + i // len(anchors)) % len(MOVEMENTS)]]
        direction = int(rng.integers(len(DIRECTIONS)))
        i += 1
        if (anchor, movement, direction) in seen and i < 50 * n:
            continue
        seen.add((anchor, movement, direction))
        out.append(Trajectory(anchor, movement, direction, float(rng.uniform(0.25, 0.45)),
                              int(rng.integers(len(ORIENTATIONS))), str(rng.choice(TWO_HANDED, p=TWO_HANDED_P))))
    return out


def build_inventory(preset: SyntheticPreset, rng: np.random.Generator) -> list[Sign]:
    """The preset's glosses (Zipf rank order) followed by the special tokens.

    Gloss j gets trajectory j mod num_trajectories and the least used hand shape not yet paired with that
    trajectory: glosses sharing a trajectory differ in hand shape, and each shape appears on many trajectories.
    """
    if preset.num_shapes > len(HAND_SHAPES):
        raise ValueError(f"preset {preset.name}: num_shapes {preset.num_shapes} > {len(HAND_SHAPES)} hand shapes")
    if preset.vocab_size > preset.num_trajectories * preset.num_shapes:
        raise ValueError(f"preset {preset.name}: vocab_size {preset.vocab_size} > trajectories x shapes")
    names = gloss_names(preset.vocab_size, rng)
    trajs = _trajectories(preset.num_trajectories, rng)
    shapes = list(rng.permutation(list(HAND_SHAPES))[: preset.num_shapes])
    used = {s: 0 for s in shapes}
    pairs: set[tuple[int, str]] = set()
    lo, hi = preset.gloss_frames
    signs = []
    for j, name in enumerate(names):
        t = j % len(trajs)
        free = [s for s in shapes if (t, s) not in pairs]
        least = min(used[s] for s in free)
        shape = str(rng.choice([s for s in free if used[s] == least]))
        used[shape] += 1
        pairs.add((t, shape))
        frames = int(rng.integers(lo, hi + 1))
        if trajs[t].movement in ("circle", "zigzag", "trill"):
            frames = int(round(frames * 1.15))  # repeated movements take a little longer
        signs.append(Sign(name, trajs[t], shape, frames, float(rng.uniform(0.1, 0.6)), int(rng.integers(1, 4))))
    return signs + _special_signs(preset)


@dataclass
class Grammar:
    """A gloss-bigram grammar: p(next | prev) = w * successors(prev) + (1 - w) * Zipf unigram."""

    names: list[str]
    unigram_cdf: np.ndarray  # (V,)
    successors: np.ndarray  # (V, K) gloss indices
    successor_cdf: np.ndarray  # (V, K)
    bigram_weight: float

    @classmethod
    def build(cls, names: list[str], preset: SyntheticPreset, rng: np.random.Generator) -> "Grammar":
        v = len(names)
        p = 1.0 / (np.arange(v) + preset.zipf_offset) ** preset.zipf
        p /= p.sum()
        k = min(preset.successors, v)
        succ = np.stack([rng.choice(v, size=k, replace=False, p=p) for _ in range(v)])
        w = rng.dirichlet(np.ones(k), size=v)
        return cls(names, np.cumsum(p), succ, np.cumsum(w, axis=1), preset.bigram_weight)

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        u = rng.random((n, 2))
        out = [int(np.searchsorted(self.unigram_cdf, u[0, 1] * self.unigram_cdf[-1]))]
        for i in range(1, n):
            prev = out[-1]
            if u[i, 0] < self.bigram_weight:
                j = int(np.searchsorted(self.successor_cdf[prev], u[i, 1] * self.successor_cdf[prev, -1]))
                out.append(int(self.successors[prev, min(j, self.successors.shape[1] - 1)]))
            else:
                out.append(int(np.searchsorted(self.unigram_cdf, u[i, 1] * self.unigram_cdf[-1])))
        return [self.names[min(i, len(self.names) - 1)] for i in out]


def sample_sentence(grammar: Grammar, preset: SyntheticPreset, rng: np.random.Generator) -> list[str]:
    """Glosses of one sentence: a length, grammar glosses with sparse specials, sometimes __ON__ / __OFF__."""
    while True:
        n = int(round(rng.normal(preset.glosses_mean, preset.glosses_std)))
        if preset.glosses_min <= n <= preset.glosses_max:
            break
    tokens = grammar.sample(n, rng)
    specials, probs = list(preset.p_special), np.array(list(preset.p_special.values()))
    u = rng.random(n)
    cum = np.cumsum(probs)
    for i in range(n):
        k = int(np.searchsorted(cum, u[i], side="right"))
        if k < len(specials):
            tokens[i] = specials[k]
    if all(t in preset.p_special for t in tokens):  # keep at least one real gloss
        tokens[0] = grammar.sample(1, rng)[0]
    if rng.random() < preset.p_on:
        tokens.insert(0, ON)
    if rng.random() < preset.p_off:
        tokens.append(OFF)
    return tokens


# ----------------------------------------------------------------------------------------------------------
# Signers
# ----------------------------------------------------------------------------------------------------------

_SKIN = ((224, 184, 160), (198, 150, 120), (160, 112, 80), (110, 75, 55), (236, 200, 175), (180, 130, 100))
_HAIR = ((40, 30, 25), (90, 60, 35), (160, 120, 70), (20, 20, 20), (120, 120, 120))
_CLOTH = ((25, 30, 60), (20, 20, 25), (30, 60, 40), (70, 25, 35), (60, 60, 65), (40, 40, 90))


@dataclass(frozen=True)
class Signer:
    """One signer's body, motion and look. Positions are normalised image coordinates of the neck base."""

    name: str
    scale: float  # shoulder width / frame width
    cx: float
    cy: float
    speed: float
    upper_arm: float  # body units
    forearm: float
    hand: float  # hand length, body units
    noise: float  # landmark noise multiplier
    missing: float  # missing-hand rate multiplier
    skin: tuple
    cloth: tuple
    hair: tuple
    background: tuple  # two RGB colours
    pattern: int
    texture_seed: int


def make_signers(preset: SyntheticPreset, rng: np.random.Generator) -> list[Signer]:
    signers = []
    for k in range(preset.num_signers):
        base = rng.uniform(60, 200, 3)
        v = preset.signer_speed_variation
        skin = np.array(_SKIN[int(rng.integers(len(_SKIN)))]) + rng.normal(0, 6, 3)
        signers.append(Signer(
            name=f"Signer{k + 1:02d}", scale=preset.body_scale * float(rng.uniform(0.92, 1.08)),
            cx=0.5 + float(rng.uniform(-0.05, 0.05)), cy=preset.body_y + float(rng.uniform(-0.03, 0.03)),
            speed=float(rng.uniform(1 - v, 1 + v)), upper_arm=0.62 * float(rng.uniform(0.95, 1.05)),
            forearm=0.55 * float(rng.uniform(0.95, 1.05)), hand=0.55 * float(rng.uniform(0.92, 1.08)),
            noise=float(rng.uniform(0.7, 1.3)), missing=float(rng.uniform(0.5, 1.5)),
            skin=tuple(int(c) for c in np.clip(skin, 0, 255)), cloth=_CLOTH[k % len(_CLOTH)],
            hair=_HAIR[int(rng.integers(len(_HAIR)))],
            background=(tuple(float(c) for c in base), tuple(float(c) for c in np.clip(base + rng.normal(0, 35, 3), 0, 255))),
            pattern=k % 4, texture_seed=int(rng.integers(2 ** 31)),
        ))
    return signers


# ----------------------------------------------------------------------------------------------------------
# Corpus plan: every sample's sentence, signer and seed, drawn in the main process
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleSpec:
    key: str
    split: str
    tokens: tuple
    signer: int  # index into the corpus's signers
    seed: tuple  # SeedSequence entropy of this sample


@dataclass
class Corpus:
    preset: SyntheticPreset
    seed: int
    signs: dict  # name -> Sign
    signers: list
    samples: dict  # split -> list[SampleSpec]
    held_out_signer: int | None = None


def plan_corpus(preset: SyntheticPreset, seed: int = 0, held_out_signer: int | None = None,
                num_videos: dict | None = None) -> Corpus:
    """Draw the inventory, grammar, signers and every sample's sentence and signer (cheap: no rendering).

    Args:
        held_out_signer: 1-based signer number that appears only in dev and test (None: all signers everywhere).
        num_videos: override the preset's videos per split (e.g. to sample statistics on a subset).
    """
    if held_out_signer is not None and not 1 <= held_out_signer <= preset.num_signers:
        raise ValueError(f"--held-out-signer {held_out_signer}: preset {preset.name} has signers 1..{preset.num_signers}")
    signs = build_inventory(preset, np.random.default_rng([seed, 1]))
    grammar = Grammar.build([s.name for s in signs[: preset.vocab_size]], preset, np.random.default_rng([seed, 2]))
    signers = make_signers(preset, np.random.default_rng([seed, 3]))
    share = np.random.default_rng([seed, 4]).dirichlet(np.full(preset.num_signers, preset.signer_alpha))
    train_ids = [k for k in range(preset.num_signers) if k + 1 != held_out_signer]
    train_p = share[train_ids] / share[train_ids].sum()
    samples = {}
    for si, split in enumerate(SPLITS):
        n = (num_videos or preset.num_videos)[split]
        rng = np.random.default_rng([seed, 10 + si])
        if split == "train":
            who = rng.choice(train_ids, size=n, p=train_p)
        else:  # balanced over all signers (the held-out one included), in a random order
            who = rng.permutation(np.arange(n) % preset.num_signers)
        samples[split] = [
            SampleSpec(f"{split}_{i:06d}", split, tuple(sample_sentence(grammar, preset, rng)), int(who[i]),
                       (seed, 10 + si, i))
            for i in range(n)
        ]
    return Corpus(preset, seed, {s.name: s for s in signs}, signers, samples, held_out_signer)


# ----------------------------------------------------------------------------------------------------------
# One sample: timeline -> skeleton -> landmarks + frames
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    """Frame counts of one video: idle at both ends, and per token (transition frames, sign frames)."""

    idle_start: int
    steps: list  # [(transition, frames)] per token
    end_transition: int
    idle_end: int
    speed: float

    @property
    def raw_frames(self) -> int:
        return self.idle_start + sum(c + d for c, d in self.steps) + self.end_transition + self.idle_end


def plan_timing(spec: SampleSpec, corpus: Corpus, rng: np.random.Generator) -> tuple[Timing, int]:
    """Durations of one video (first draws of the sample's rng) and its final frame count."""
    p = corpus.preset
    speed = corpus.signers[spec.signer].speed * rng.uniform(1 - p.speed_variation, 1 + p.speed_variation)
    jitter = rng.uniform(0.9, 1.1, len(spec.tokens))
    co = rng.uniform(0.7, 1.3, len(spec.tokens) + 1)
    steps = [(max(1, int(round(p.coart_frames * co[i] / speed))),
              max(3, int(round(corpus.signs[tok].frames * jitter[i] / speed)))) for i, tok in enumerate(spec.tokens)]
    idle = rng.integers(p.idle_frames[0], p.idle_frames[1] + 1, 2)
    timing = Timing(int(idle[0]), steps, max(1, int(round(p.coart_frames * co[-1] / speed))), int(idle[1]),
                    float(speed))
    deficit = p.min_frames - timing.raw_frames
    if deficit > 0:  # too short: wait longer at both ends rather than sign slower
        timing.idle_start += deficit // 2
        timing.idle_end += deficit - deficit // 2
    return timing, min(timing.raw_frames, p.max_frames)


def _hold(row: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(row[None], n, 0)


def _state(rest: bool) -> np.ndarray:
    """Controls of a waiting signer: arms hanging (rest) or hands low in front (idle)."""
    c = np.zeros(NUM_CONTROLS)
    c[C_RWRIST] = c[C_LWRIST] = REST if rest else IDLE
    c[C_RSHAPE] = c[C_LSHAPE] = RELAXED
    c[C_REULER] = c[C_LEULER] = REST_EULER if rest else IDLE_EULER
    return c


def _transition(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """n frames strictly between control rows a and b, eased."""
    t = _smoothstep(np.arange(1, n + 1) / (n + 1))[:, None]
    return a + t * (b - a)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0), edges padded by repetition. x: (T, C)."""
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.concatenate([_hold(x[0], r), x, _hold(x[-1], r)])
    return sum(k[i] * xp[i: i + len(x)] for i in range(2 * r + 1))


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """(T, C) -> (n, C) by linear interpolation in time (plays a too long video faster)."""
    src = np.linspace(0, len(x) - 1, n)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (src - i0)[:, None]
    return x[i0] * (1 - w) + x[i1] * w


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, scale: float, corr: float = 8.0) -> np.ndarray:
    """Slowly varying noise (n, dims) with std ~scale: sway, drift."""
    x = _smooth(rng.normal(0, 1, (n + 1, dims)), corr)[:n]
    return x * scale / max(float(x.std()), 1e-6)


def build_controls(spec: SampleSpec, corpus: Corpus, timing: Timing, num_frames: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Controls (T, NUM_CONTROLS) of the whole video and each token's [start, end) frames."""
    start, end = _state(spec.tokens[0] == ON), _state(spec.tokens[-1] == OFF)
    parts, spans, t, prev = [_hold(start, timing.idle_start)], [], timing.idle_start, start
    for tok, (c, d) in zip(spec.tokens, timing.steps):
        ctrl = sign_controls(corpus.signs[tok], d, rng)
        parts += [_transition(prev, ctrl[0], c), ctrl]
        spans.append([t + c, t + c + d])
        t, prev = t + c + d, ctrl[-1]
    parts += [_transition(prev, end, timing.end_transition), _hold(end, timing.idle_end)]
    ctrl = np.concatenate(parts)
    if len(ctrl) != num_frames:
        ratio = (num_frames - 1) / (len(ctrl) - 1)
        ctrl = _resample(ctrl, num_frames)
        spans = [[int(round(a * ratio)), max(int(round(a * ratio)) + 1, int(round(b * ratio)))] for a, b in spans]
    ctrl = _smooth(ctrl, corpus.preset.smooth_sigma)
    # Nobody is perfectly still: slow drift of the hands (idle frames included) and of the head.
    ctrl[:, C_RWRIST] += _smooth_noise(rng, num_frames, 3, 0.015)
    ctrl[:, C_LWRIST] += _smooth_noise(rng, num_frames, 3, 0.015)
    ctrl[:, [C_HEAD_ROLL, C_HEAD_PITCH]] += _smooth_noise(rng, num_frames, 2, 0.04, corr=12.0)
    return ctrl, spans


def skeleton(ctrl: np.ndarray, signer: Signer, frame_size: tuple, rng: np.random.Generator) -> np.ndarray:
    """Controls (T, C) -> clean Holistic landmarks (T, 543, 3): x, y normalised to the image, z (larger = farther)
    relative to the hips for the body, to the wrist for each hand, to the face centre for the face."""
    n = len(ctrl)
    sway = _smooth_noise(rng, n, 3, 0.015, corr=15.0)  # (T, 3) torso sway
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


def observe(landmarks: np.ndarray, signer: Signer, preset: SyntheticPreset, rng: np.random.Generator) -> np.ndarray:
    """What a pose estimator would report: noise, hands sometimes undetected (NaN), float16 (T, 543, 3)."""
    n = len(landmarks)
    sigma = preset.landmark_noise * signer.noise
    pose = relative_z(landmarks) + rng.normal(0, sigma, landmarks.shape)
    for part in ("left_hand", "right_hand"):
        sl = LANDMARK_SLICES[part]
        pose[:, sl, :2] += rng.normal(0, sigma, (n, 1, 2))  # the whole hand jitters too
        wrist = landmarks[:, sl.start, :2]  # (T, 2)
        speed = np.linalg.norm(np.diff(wrist, axis=0, prepend=wrist[:1]), axis=-1)
        # Motion blur: fast frames are missed more often; misses come in bursts of ~2 frames.
        p = preset.missing_hand_rate * signer.missing * np.clip(0.4 + 0.6 * speed / max(speed.mean(), 1e-6), 0, 3)
        missing = np.zeros(n, bool)
        for s in np.flatnonzero(rng.random(n) < p / 2):
            missing[s: s + int(rng.geometric(0.5))] = True
        missing |= ((wrist < 0) | (wrist > 1)).any(-1)  # out of the picture
        pose[missing, sl] = np.nan
    return pose.astype(np.float16)


def signer_style(signer: Signer, preset: SyntheticPreset) -> Style:
    h, w = preset.frame_size
    ss = preset.supersample
    rng = np.random.default_rng([signer.texture_seed, ss, h, w])
    bg = make_background((h * ss, w * ss), np.array(signer.background[0]), np.array(signer.background[1]),
                         signer.pattern, rng)
    skin = np.array(signer.skin)
    cloth = np.array(signer.cloth)
    return Style(bg, tuple(signer.skin), tuple(int(c) for c in skin * 0.75), tuple(signer.cloth),
                 tuple(int(c) for c in np.minimum(cloth * 1.3 + 45, 255)), tuple(signer.hair))


def make_sample(spec: SampleSpec, corpus: Corpus, render: bool = True) -> VideoSample:
    """Generate one video (pose + frames) from its spec; the result depends only on the spec and the corpus."""
    p = corpus.preset
    rng = np.random.default_rng(list(spec.seed))
    signer = corpus.signers[spec.signer]
    timing, num_frames = plan_timing(spec, corpus, rng)
    ctrl, spans = build_controls(spec, corpus, timing, num_frames, rng)
    clean = skeleton(ctrl, signer, p.frame_size, rng)
    pose = observe(clean, signer, p, rng)
    jpegs = None
    if render:
        jpegs = render_frames(clean, np.clip(ctrl[:, C_MOUTH], 0, 1), signer_style(signer, p), p.frame_size,
                              p.supersample, p.pixel_noise, p.jpeg_quality, rng)
    meta = {
        "signer": signer.name, "split": spec.split, "fps": FPS, "num_frames": num_frames,
        "corpus": f"synthetic-{p.name}", "orig_size": list(p.frame_size), "frame_size": list(p.frame_size),
        "speed": round(timing.speed, 4), "gloss_spans": spans,
    }
    return VideoSample(spec.key, " ".join(spec.tokens), meta, jpegs, pose)


# ----------------------------------------------------------------------------------------------------------
# Shards, manifest, CLI
# ----------------------------------------------------------------------------------------------------------

def _write_shard_job(path: str, specs: list, corpus: Corpus) -> dict:
    return write_shard(path, (make_sample(s, corpus) for s in specs))


def _config(corpus: Corpus) -> dict:
    return {"generator": "cslr.datasets.synthetic", "version": GENERATOR_VERSION, "seed": corpus.seed,
            "held_out_signer": corpus.held_out_signer, "preset": asdict(corpus.preset)}


def _reusable(out: Path, config: dict) -> dict:
    """Shard entries of an earlier run with the same config whose files are intact: name -> entry."""
    entries = {}
    for name in (MANIFEST, ".synthetic-progress.json"):
        old = read_json_record(out / name)
        if old is None:
            continue
        if old.get("config") != json.loads(json.dumps(config)):
            continue
        for split in old.get("splits", {}).values():
            for e in split.get("shards", []):
                entries[e["name"]] = e
    return {n: e for n, e in entries.items()
            if (out / n).is_file() and (out / n).stat().st_size == e["bytes"] and sha256_file(out / n) == e["sha256"]}


def cached_corpus(preset: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    """The built-in corpus of `preset`, prepared once into the cache (`cslr.io.cache_dir()`) -> its folder.

    Call it on one process (the main one); the folder exists complete or not at all (manifest written last).
    """
    path = cache_dir() / f"synthetic-{preset}-seed{seed}"
    if not (path / MANIFEST).is_file():
        prepare_synthetic(path, preset=preset, seed=seed, workers=workers)
    return path


def prepare_synthetic(out_dir: str | os.PathLike, preset: str | SyntheticPreset = "small", seed: int = 0,
                      workers: int | None = None, held_out_signer: int | None = None, progress: bool = True) -> dict:
    """Generate a synthetic corpus into `out_dir`: shards, vocab.txt, manifest.json. Returns the manifest.

    Args:
        preset: a PRESETS key or a SyntheticPreset.
        seed: everything is drawn from it; the same seed and preset give byte-identical shards.
        workers: processes (default: CPU count; 1 = in this process). Does not change the output.
        held_out_signer: 1-based signer that appears only in dev and test.
        progress: show a tqdm bar.
    A rerun into the same folder with the same settings keeps the shards that are already complete.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown synthetic preset {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = plan_corpus(preset, seed, held_out_signer)
    config = _config(corpus)
    jobs = [(split, shard_name(split, i // preset.shard_size), specs[i: i + preset.shard_size])
            for split, specs in corpus.samples.items() for i in range(0, len(specs), preset.shard_size)]
    done = _reusable(out, config)
    entries = {name: done[name] for _, name, _ in jobs if name in done}
    todo = [j for j in jobs if j[1] not in entries]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=sum(len(s) for _, _, s in jobs), initial=sum(e["count"] for e in entries.values()),
               unit="video", desc=f"synthetic-{preset.name}", disable=not progress)

    def finished(name: str, entry: dict) -> None:
        entries[name] = entry
        bar.update(entry["count"])
        atomic_write_json(out / ".synthetic-progress.json",
                          {"config": config, "splits": {"all": {"shards": list(entries.values())}}})

    if workers == 1:
        for _, name, specs in todo:
            finished(name, _write_shard_job(str(out / name), specs, corpus))
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_write_shard_job, str(out / name), specs, corpus): name for _, name, specs in todo}
            for f in as_completed(futures):
                finished(futures[f], f.result())
    bar.close()

    vocab = Vocabulary.build(" ".join(s.tokens) for s in corpus.samples["train"])
    vocab.save(out / VOCAB)
    splits = {}
    for split in SPLITS:
        shards = [entries[name] for s, name, _ in jobs if s == split]
        splits[split] = {"num_samples": sum(e["count"] for e in shards),
                         "num_frames": sum(e["frames"] for e in shards), "shards": shards}
    manifest = {
        "format": "cslr-shards/1", "corpus": f"synthetic-{preset.name}", "protocol": "phoenix2014", "fps": FPS,
        "frame_size": list(preset.frame_size), "modalities": ["rgb", "pose"],
        "pose_layout": [list(x) for x in POSE_LAYOUT], "vocab_size": len(vocab.glosses),
        "splits": splits, "skipped": {s: [] for s in SPLITS}, "config": config,
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / ".synthetic-progress.json").unlink(missing_ok=True)
    return manifest


def corpus_statistics(preset: str | SyntheticPreset = "phoenix", seed: int = 0, num_videos: dict | None = None) -> dict:
    """Sentence and length statistics of a preset, without rendering (seconds even for `phoenix`).

    Returns per split: videos, frames (mean/min/max), glosses per sentence (mean/min/max), distinct glosses,
    and the share of sentences starting with __ON__ / ending with __OFF__.
    """
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    corpus = plan_corpus(preset, seed, num_videos=num_videos)
    stats = {}
    for split, specs in corpus.samples.items():
        frames = np.array([plan_timing(s, corpus, np.random.default_rng(list(s.seed)))[1] for s in specs])
        glosses = np.array([len(s.tokens) for s in specs])
        stats[split] = {
            "videos": len(specs), "frames_mean": float(frames.mean()), "frames_min": int(frames.min()),
            "frames_max": int(frames.max()), "glosses_mean": float(glosses.mean()), "glosses_min": int(glosses.min()),
            "glosses_max": int(glosses.max()), "distinct_glosses": len({g for s in specs for g in s.tokens}),
            "on_share": float(np.mean([s.tokens[0] == ON for s in specs])),
            "off_share": float(np.mean([s.tokens[-1] == OFF for s in specs])),
        }
    return stats


def preview(preset: str = "small", path: str = "preview.png", seed: int = 0, index: int = 0) -> None:
    """Save the frames of one training video side by side as a PNG (a quick look at the data)."""
    import io

    from PIL import Image

    corpus = plan_corpus(PRESETS[preset], seed)
    sample = make_sample(corpus.samples["train"][index], corpus)
    frames = [Image.open(io.BytesIO(b)).convert("RGB") for b in sample.jpegs]
    w, h = frames[0].size
    cols = 12
    sheet = Image.new("RGB", (w * cols, h * ((len(frames) + cols - 1) // cols)))
    for i, f in enumerate(frames):
        sheet.paste(f, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)
    print(f"{path}: {sample.gloss} ({len(frames)} frames, {sample.meta['signer']})")


def add_cli(subparsers) -> None:
    """Register `synthetic` with launch/prepare.py."""
    p = subparsers.add_parser("synthetic", help="generate the built-in synthetic corpus", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--out", required=True, help="output folder (a finished or interrupted run there is resumed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    p.add_argument("--held-out-signer", type=int, default=None, metavar="K",
                   help="signer K (1-based) appears only in dev and test")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--preview", metavar="PNG", default=None,
                   help="also save the frames of the first train video side by side as a PNG contact sheet")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        m = prepare_synthetic(args.out, args.preset, seed=args.seed, workers=args.workers,
                              held_out_signer=args.held_out_signer, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = {s: v["num_samples"] for s, v in m["splits"].items()}
    total = sum(e["bytes"] for v in m["splits"].values() for e in v["shards"])
    print(f"{args.out}: {m['corpus']} {sizes} videos, {m['vocab_size']} glosses, {total / 1e6:.1f} MB")
    if args.preview:
        preview(args.preset, args.preview, seed=args.seed)
    return 0
