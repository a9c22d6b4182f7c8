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

import io
import json
import os
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from cslr.io import Progress, atomic_write_json, cache_dir, read_json_record, sha256_file

from ..pool import run_pool
from ..render import render_frames
from ..schema import POSE_LAYOUT, VideoSample
from ..vocab import Vocabulary
from ..writer import MANIFEST, VOCAB, shard_name, write_shard
from .body import C_MOUTH, observe, skeleton
from .motion import build_controls, plan_timing
from .plan import Corpus, SampleSpec, plan_corpus
from .presets import FPS, OFF, ON, PRESETS, SPLITS, SyntheticPreset
from .signers import signer_style

GENERATOR_VERSION = 2  # bump when the generated data changes for the same seed and preset


# ----------------------------------------------------------------------------------------------------------
# One sample: timeline -> skeleton -> landmarks + frames
# ----------------------------------------------------------------------------------------------------------

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
# Shards, manifest
# ----------------------------------------------------------------------------------------------------------

def _write_shard_job(corpus: Corpus, out: Path, job: tuple, on_video) -> dict:
    """Write one shard (a `run_pool` job: (split, name, specs)); `on_video()` after each video, for the bar."""
    _, name, specs = job

    def samples():
        for spec in specs:
            yield make_sample(spec, corpus)
            on_video()

    return write_shard(str(out / name), samples())


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
    path = cache_dir() / f"synthetic-{preset}-seed{seed}-v{GENERATOR_VERSION}"
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
        progress: show progress in videos (cslr.io.Progress: a bar on a terminal, else plain lines).
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
    bar = Progress(sum(len(s) for _, _, s in jobs), sum(e["count"] for e in entries.values()), unit="video",
                   desc=f"synthetic-{preset.name}", enabled=progress)

    def finished(job: tuple, entry: dict) -> None:  # a shard is complete: a rerun keeps it
        entries[job[1]] = entry
        atomic_write_json(out / ".synthetic-progress.json",
                          {"config": config, "splits": {"all": {"shards": list(entries.values())}}})

    run_pool(partial(_write_shard_job, corpus, out), todo, workers, bar.update, on_result=finished)
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
