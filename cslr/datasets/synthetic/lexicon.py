"""The gloss inventory: PHOENIX-like gloss names, hand shapes, and the motion primitives (trajectories) that
make each gloss a sign of both hands.

Geometry is in body units (shoulder width 1), x to the image right (the signer's left), y down, z away from
the camera; right-hand quantities (the left hand is a mirrored right hand, see `body.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .presets import EMOTION, LEFTHAND, OFF, ON, PU, SyntheticPreset


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
# Hand shapes, palm orientations, start locations, movements
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


# ----------------------------------------------------------------------------------------------------------
# Signs (glosses as motion primitives) and the inventory
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
