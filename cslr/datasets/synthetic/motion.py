"""Motion: signs -> control signals over time. One sign instance's controls (its motion primitive with instance
jitter), a video's timeline (per-instance and per-signer speed, gloss durations, idle frames) and
co-articulation (eased transitions, then temporal smoothing: no clean boundaries)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .body import (
    BASE_HAND, C_HEAD_PITCH, C_HEAD_ROLL, C_LEULER, C_LSHAPE, C_LWRIST, C_MOUTH, C_REULER, C_RSHAPE, C_RWRIST,
    IDLE, IDLE_EULER, NUM_CONTROLS, REST, REST_EULER,
)
from .curves import hold, resample, smooth, smooth_noise, smoothstep, transition
from .lexicon import ANCHORS, DIRECTIONS, HAND_SHAPES, ORIENTATIONS, RELAXED, Sign
from .plan import Corpus, SampleSpec
from .presets import OFF, ON


# ----------------------------------------------------------------------------------------------------------
# One sign instance
# ----------------------------------------------------------------------------------------------------------

def _movement(kind: str, t: np.ndarray, amp: float, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (n, 3) along a movement and an extra wrist roll (n,), for t in [0, 1]."""
    p = np.array((-d[1], d[0], 0.0)) if abs(d[2]) < 0.9 else np.array((0.0, -1.0, 0.0))
    p = p / np.linalg.norm(p)
    e = smoothstep(t)[:, None]
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


def sign_controls(sign: Sign, n: int, rng: np.random.Generator, drop_passive: float = 0.0) -> np.ndarray:
    """The (n, NUM_CONTROLS) controls of one instance of `sign` lasting n frames, with instance jitter.

    `drop_passive`: probability that the idle hand of a one-handed sign hangs at rest instead of waiting low in
    front, as many PHOENIX signers let their non-dominant hand drop (below the frame, where MediaPipe loses it).
    """
    tr = sign.trajectory
    t = np.linspace(0.0, 1.0, n)
    c = np.zeros((n, NUM_CONTROLS))
    shape = RELAXED if sign.shape == "relaxed" else np.array(HAND_SHAPES[sign.shape])
    shape = np.clip(shape + rng.normal(0, 0.04, 7), 0, 1)
    euler = np.array(ORIENTATIONS[tr.orientation]) + rng.normal(0, 0.08, 3)
    d = DIRECTIONS[tr.direction] + rng.normal(0, 0.08, 3)
    disp, roll = _movement(tr.movement, t, tr.amplitude * rng.uniform(0.85, 1.15), d / np.linalg.norm(d))
    anchor = np.array(ANCHORS[tr.anchor]) + rng.normal(0, 0.03, 3)
    drop = tr.two_handed in ("one", "left") and rng.random() < drop_passive
    idle = (REST if drop else IDLE) + rng.normal(0, 0.03, 3)
    active, passive = anchor + disp, np.repeat(idle[None], n, 0)
    c[:, C_RSHAPE], c[:, C_LSHAPE] = shape, RELAXED
    c[:, C_REULER], c[:, C_LEULER] = euler, REST_EULER if drop else IDLE_EULER
    c[:, C_REULER.start + 2] += roll
    if tr.two_handed == "rise":
        active = passive = REST + smoothstep(t)[:, None] * (IDLE - REST)
        c[:, C_REULER] = c[:, C_LEULER] = REST_EULER + smoothstep(t)[:, None] * (IDLE_EULER - REST_EULER)
    elif tr.two_handed == "drop":
        active = passive = IDLE + smoothstep(t)[:, None] * (REST - IDLE)
        c[:, C_REULER] = c[:, C_LEULER] = IDLE_EULER + smoothstep(t)[:, None] * (REST_EULER - IDLE_EULER)
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
        c[:, C_REULER], c[:, C_LEULER] = c[:, C_LEULER].copy(), c[:, C_REULER].copy()
    c[:, C_RWRIST], c[:, C_LWRIST] = active, passive
    c[:, C_MOUTH] = sign.mouth * np.abs(np.sin(np.pi * sign.syllables * t))
    if sign.emotion:
        c[:, C_MOUTH] = 0.9 * np.sin(np.pi * t)
        c[:, C_HEAD_ROLL] = 0.25 * np.sin(np.pi * t)
        c[:, C_HEAD_PITCH] = -0.2 * np.sin(np.pi * t)
    return c


# ----------------------------------------------------------------------------------------------------------
# A video's timeline and co-articulation
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


def _state(rest: bool) -> np.ndarray:
    """Controls of a waiting signer: arms hanging (rest) or hands low in front (idle)."""
    c = np.zeros(NUM_CONTROLS)
    c[C_RWRIST] = c[C_LWRIST] = REST if rest else IDLE
    c[C_RSHAPE] = c[C_LSHAPE] = RELAXED
    c[C_REULER] = c[C_LEULER] = REST_EULER if rest else IDLE_EULER
    return c


def build_controls(spec: SampleSpec, corpus: Corpus, timing: Timing, num_frames: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Controls (T, NUM_CONTROLS) of the whole video and each token's [start, end) frames."""
    start, end = _state(spec.tokens[0] == ON), _state(spec.tokens[-1] == OFF)
    parts, spans, t, prev = [hold(start, timing.idle_start)], [], timing.idle_start, start
    drop_passive = corpus.signers[spec.signer].drop_passive
    for tok, (c, d) in zip(spec.tokens, timing.steps):
        ctrl = sign_controls(corpus.signs[tok], d, rng, drop_passive)
        parts += [transition(prev, ctrl[0], c), ctrl]
        spans.append([t + c, t + c + d])
        t, prev = t + c + d, ctrl[-1]
    parts += [transition(prev, end, timing.end_transition), hold(end, timing.idle_end)]
    ctrl = np.concatenate(parts)
    if len(ctrl) != num_frames:
        ratio = (num_frames - 1) / (len(ctrl) - 1)
        ctrl = resample(ctrl, num_frames)
        spans = [[int(round(a * ratio)), max(int(round(a * ratio)) + 1, int(round(b * ratio)))] for a, b in spans]
    ctrl = smooth(ctrl, corpus.preset.smooth_sigma)
    # Nobody is perfectly still: slow drift of the hands (idle frames included) and of the head.
    ctrl[:, C_RWRIST] += smooth_noise(rng, num_frames, 3, 0.015)
    ctrl[:, C_LWRIST] += smooth_noise(rng, num_frames, 3, 0.015)
    ctrl[:, [C_HEAD_ROLL, C_HEAD_PITCH]] += smooth_noise(rng, num_frames, 2, 0.04, corr=12.0)
    return ctrl, spans
