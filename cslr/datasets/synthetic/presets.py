"""Synthetic corpus presets: size and difficulty knobs, the splits, the frame rate and the PHOENIX special tokens.

Bottom of the package: plain data, no imports from the rest of `cslr.datasets.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SPLITS = ("train", "dev", "test")
FPS = 25

ON, OFF, EMOTION, PU, LEFTHAND = "__ON__", "__OFF__", "__EMOTION__", "__PU__", "__LEFTHAND__"


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
    missing_hand_rate: float  # share of signing frames where a hand's tracking is lost (NaN), in runs; low hands
    # (at rest) and hands leaving the picture are missed besides (`body.observe`)
    pixel_noise: float  # std of RGB sensor noise (0..255)
    jpeg_quality: int
    supersample: int  # draw at this factor x frame size, then box-filter down
    body_scale: float  # shoulder width / frame width
    body_y: float  # shoulder line height / frame height


_SMALL = SyntheticPreset(
    name="small", num_videos={"train": 1200, "dev": 120, "test": 120}, frame_size=(64, 64), shard_size=100,
    num_signers=4, vocab_size=48, num_trajectories=16, num_shapes=10, zipf=0.4, zipf_offset=2.0,
    bigram_weight=0.4, successors=6, glosses_mean=5.0, glosses_std=1.4, glosses_min=3, glosses_max=7,
    p_on=0.65, p_off=0.65,
    p_special={EMOTION: 0.015, PU: 0.015, LEFTHAND: 0.005}, gloss_frames=(6, 9), coart_frames=2.0,
    idle_frames=(2, 5), min_frames=24, max_frames=96, speed_variation=0.3, signer_speed_variation=0.1,
    signer_alpha=50.0, smooth_sigma=1.0, landmark_noise=0.003, missing_hand_rate=0.3, pixel_noise=4.0,
    jpeg_quality=88, supersample=2, body_scale=0.36, body_y=0.5,
)

PRESETS: dict[str, SyntheticPreset] = {
    "tiny": SyntheticPreset(
        name="tiny", num_videos={"train": 36, "dev": 8, "test": 8}, frame_size=(32, 32), shard_size=16,
        num_signers=3, vocab_size=10, num_trajectories=5, num_shapes=5, zipf=0.3, zipf_offset=2.0,
        bigram_weight=0.3, successors=3, glosses_mean=2.5, glosses_std=0.8, glosses_min=2, glosses_max=3, p_on=0.6, p_off=0.6,
        p_special={EMOTION: 0.05, PU: 0.05, LEFTHAND: 0.0}, gloss_frames=(5, 7), coart_frames=1.5,
        idle_frames=(1, 3), min_frames=20, max_frames=40, speed_variation=0.3, signer_speed_variation=0.1,
        signer_alpha=50.0, smooth_sigma=0.8, landmark_noise=0.003, missing_hand_rate=0.1, pixel_noise=4.0,
        jpeg_quality=88, supersample=2, body_scale=0.36, body_y=0.5,
    ),
    "small": _SMALL,
    # `small` with gloss order as predictable as PHOENIX's weather forecasts, for measuring what a gloss LM buys: a
    # trigram on the 1,200 training sentences has 0.35 of a unigram's perplexity on 5,000 planned dev sentences
    # (11.4 / 32.5; PHOENIX-2014's real dev: 50.9 / 143.1 = 0.36; `small`: 19.3 / 34.1 = 0.57). Only the grammar
    # differs: the same signs, signers, sentence lengths and rendering.
    "small-forecast": replace(_SMALL, name="small-forecast", bigram_weight=0.8),
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
        landmark_noise=0.003, missing_hand_rate=0.3, pixel_noise=4.0, jpeg_quality=88, supersample=1,
        body_scale=0.42, body_y=0.5,
    ),
}
