"""Draw RGB frames from MediaPipe Holistic landmarks: the video side of the synthetic corpus.

A cheap "puppet" renderer: a textured background, torso, neck, head (hair, eyes, mouth), arms and hands
(palm polygon + finger bones) drawn with PIL ImageDraw at `supersample` x the frame size, box-filtered
down (anti-aliasing), with per-frame sensor noise, then JPEG-compressed. About 0.1 to 0.3 ms a frame at
64x64 on one core. Used by `cslr.datasets.synthetic`; nothing here is random except through the `rng`
argument, so the same inputs give the same bytes.

    python -c "from cslr.datasets.synthetic import preview; preview('small', 'preview.png')"
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .schema import LANDMARK_SLICES

# MediaPipe hand landmark chains: thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20.
FINGER_CHAINS = ((0, 1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
PALM = (0, 1, 5, 9, 13, 17)
# MediaPipe face-mesh outline (FACEMESH_FACE_OVAL), used for the head ellipse.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)

_POSE0 = LANDMARK_SLICES["pose"].start
_FACE0 = LANDMARK_SLICES["face"].start
_LH0 = LANDMARK_SLICES["left_hand"].start
_RH0 = LANDMARK_SLICES["right_hand"].start


@dataclass
class Style:
    """A signer's look: colours (RGB 0..255) and the background texture at the drawing resolution."""

    background: np.ndarray  # (H * ss, W * ss, 3) uint8
    skin: tuple[int, int, int]
    skin_dark: tuple[int, int, int]
    cloth: tuple[int, int, int]
    sleeve: tuple[int, int, int]  # a little lighter than the torso, so arms in front of it stay visible
    hair: tuple[int, int, int]


def make_background(size_hw: tuple[int, int], base: np.ndarray, accent: np.ndarray, pattern: int,
                    rng: np.random.Generator) -> np.ndarray:
    """A low-contrast textured background (gradient + stripes/checks/blobs + grain), (H, W, 3) uint8.

    Args:
        size_hw: drawing resolution (H, W).
        base, accent: two RGB colours (floats 0..255) mixed by the texture.
        pattern: 0 vertical gradient, 1 stripes, 2 checks, 3 soft blobs.
    """
    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    if pattern == 0:
        mix = yy
    elif pattern == 1:
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * rng.uniform(3, 7) + yy * rng.uniform(-1, 1)))
    elif pattern == 2:
        k = rng.uniform(4, 9)
        mix = ((np.floor(xx * k) + np.floor(yy * k)) % 2) * 0.8 + 0.1
    else:
        mix = np.zeros_like(xx)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 0.4)
            mix += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        mix = np.clip(mix / mix.max(), 0, 1)
    img = base[None, None, :] * (1 - mix[..., None]) + accent[None, None, :] * mix[..., None]
    img += rng.normal(0, 4, size=img.shape)  # fixed grain (wall texture), not sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _pt(p: list, i: int) -> tuple[float, float]:
    return (p[i][0], p[i][1])


def _draw_arm_and_hand(draw: ImageDraw.ImageDraw, p: list, shoulder: int, elbow: int, wrist: int, hand0: int,
                       style: Style, s: float) -> None:
    """One arm (sleeve) and its hand. `p`: the frame's landmarks in drawing pixels; `s`: shoulder width in px."""
    draw.line([_pt(p, shoulder), _pt(p, elbow)], fill=style.sleeve, width=max(1, round(0.2 * s)))
    draw.line([_pt(p, elbow), _pt(p, wrist)], fill=style.sleeve, width=max(1, round(0.16 * s)))
    draw.polygon([_pt(p, hand0 + i) for i in PALM], fill=style.skin)
    finger_w = max(1, round(0.08 * s))
    for chain in FINGER_CHAINS:
        pts = [_pt(p, hand0 + i) for i in chain]
        if chain[0] != 0:  # fingers start at the palm's knuckles; draw them from the knuckle on
            draw.line(pts, fill=style.skin_dark, width=finger_w)
        else:
            draw.line(pts[1:], fill=style.skin_dark, width=finger_w)


def _draw_frame(bg: Image.Image, p: list, oval_box: tuple, mouth_open: float, left_first: bool, style: Style,
                s: float) -> Image.Image:
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    o = _POSE0
    # Torso: shoulders to hips, widened a little at the shoulders.
    (rsx, rsy), (lsx, lsy) = _pt(p, o + 12), _pt(p, o + 11)
    pad = 0.12 * s
    draw.polygon([(rsx - pad, rsy + pad * 0.3), (lsx + pad, lsy + pad * 0.3), _pt(p, o + 23), _pt(p, o + 24)],
                 fill=style.cloth)
    draw.ellipse([rsx - pad, rsy - pad, rsx + pad, rsy + pad], fill=style.cloth)
    draw.ellipse([lsx - pad, lsy - pad, lsx + pad, lsy + pad], fill=style.cloth)
    # Neck and head: the head ellipse is the face oval's box; hair sits on top of it.
    x0, y0, x1, y1 = oval_box
    neck_x = 0.5 * (rsx + lsx)
    draw.line([(neck_x, 0.5 * (rsy + lsy)), (0.5 * (x0 + x1), y1 - 0.1 * (y1 - y0))], fill=style.skin,
              width=max(1, round(0.3 * s)))
    hh = y1 - y0
    draw.ellipse([x0 - 0.06 * hh, y0 - 0.12 * hh, x1 + 0.06 * hh, y0 + 0.55 * hh], fill=style.hair)
    draw.ellipse([x0, y0, x1, y1], fill=style.skin)
    r_eye = max(0.8, 0.045 * hh)
    for i in (o + 2, o + 5):
        ex, ey = _pt(p, i)
        draw.ellipse([ex - r_eye, ey - r_eye, ex + r_eye, ey + r_eye], fill=(30, 30, 30))
    (mx0, my0), (mx1, my1) = _pt(p, o + 10), _pt(p, o + 9)
    my = 0.5 * (my0 + my1)
    mh = (0.02 + 0.09 * mouth_open) * hh
    draw.ellipse([mx0, my - mh, mx1, my + mh], fill=(120, 40, 45))
    # Arms: the one farther from the camera first, so the nearer arm/hand occludes it.
    right = (o + 12, o + 14, o + 16, _RH0)
    left = (o + 11, o + 13, o + 15, _LH0)
    for arm in ((left, right) if left_first else (right, left)):
        _draw_arm_and_hand(draw, p, *arm, style, s)
    return img


def render_frames(landmarks: np.ndarray, mouth_open: np.ndarray, style: Style, frame_size: tuple[int, int],
                  supersample: int, pixel_noise: float, jpeg_quality: int, rng: np.random.Generator) -> list[bytes]:
    """Draw and JPEG-encode one video.

    Args:
        landmarks: (T, 543, 3) clean Holistic landmarks, x, y normalised to the image, z: larger = farther.
        mouth_open: (T,) 0 (closed) .. 1 (wide open).
        style: the signer's look; `style.background` is at frame_size * supersample.
        frame_size: (H, W) of the stored frames.
        supersample: drawing resolution factor (1 = draw at frame size).
        pixel_noise: std of the per-frame Gaussian sensor noise, in 0..255 units.
        jpeg_quality: PIL JPEG quality.
    Returns:
        T JPEG byte strings.
    """
    h, w = frame_size
    ss = supersample
    pix = landmarks[..., :2] * np.array([w * ss, h * ss], dtype=np.float64)  # (T, 543, 2) drawing pixels
    shoulder_px = np.linalg.norm(pix[:, _POSE0 + 11] - pix[:, _POSE0 + 12], axis=-1)  # (T,)
    oval = pix[:, [_FACE0 + i for i in FACE_OVAL]]  # (T, 36, 2)
    boxes = np.concatenate([oval.min(1), oval.max(1)], axis=-1)  # (T, 4) x0, y0, x1, y1
    # The left arm is drawn first when its wrist is farther from the camera than the right wrist.
    left_first = landmarks[:, _POSE0 + 15, 2] > landmarks[:, _POSE0 + 16, 2]  # (T,)
    bg = Image.fromarray(style.background)
    # A few noise frames cycled over the video: sensor noise without a normal() call per frame.
    bank = np.rint(rng.normal(0, pixel_noise, size=(4, h, w, 3))).astype(np.int16) if pixel_noise > 0 else None
    out = []
    for t in range(len(landmarks)):
        img = _draw_frame(bg, pix[t].tolist(), tuple(boxes[t].tolist()), float(mouth_open[t]), bool(left_first[t]),
                          style, float(shoulder_px[t]))
        if ss > 1:
            img = img.reduce(ss)
        if bank is not None:
            arr = np.asarray(img, dtype=np.int16) + bank[t % len(bank)]
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=jpeg_quality)
        out.append(buf.getvalue())
    return out
