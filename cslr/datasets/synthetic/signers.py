"""Signers: each one's body size, position and proportions, speed, noise, and look (skin, clothes, background)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..render import Style, make_background
from .presets import SyntheticPreset

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
    missing: float  # multiplier of the rate at which a hand's tracking is lost while signing
    drop_passive: float  # probability that the idle hand of a one-handed sign hangs at rest (low, undetected)
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
            drop_passive=0.0,
        ))
    # Drawn after the others so that adding it left every other draw (and so the corpus statistics) unchanged.
    return [replace(s, drop_passive=float(d)) for s, d in zip(signers, rng.uniform(0.5, 1.0, len(signers)))]


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
