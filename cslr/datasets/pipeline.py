"""Streaming data pipeline: WebDataset shards -> length-bucketed, padded, augmented batches.

    loader = build_loader(DataConfig(data="data/phoenix"), "train", vocab, train=True,
                          rank=accelerator.process_index, world_size=accelerator.num_processes,
                          output_length=model.output_length)
    loader.set_epoch(epoch)
    for batch in loader: ...          # move to the device yourself; never accelerator.prepare(loader)

Throughput on a prepared folder: `python launch/benchmark.py --suite loader` (cslr/bench/loader.py).

Stages, per stream (a stream is one DataLoader worker of one rank, or the main process if num_workers=0):

    shard list -> split by rank, then by stream -> tar streaming (undecoded members)
      -> validate (cheap: headers, counts, gloss vocabulary, CTC length) + draw the video's augmentation
      -> shuffle buffer (train) -> pools of `bucket_size` sorted by length -> batches (<= batch_size videos,
         <= max_frames_per_batch padded frames) -> shuffle the batches of the pool (train)
      -> decode JPEG + pose, crop/resize/temporal rescale/jitter (augment.py) -> pad

Everything before the decode works on raw bytes, so resuming mid-epoch skips batches without decoding.

Splitting rule. With S = max(1, num_workers) streams per rank there are world_size * S slots; slot
`rank * S + stream`. Train shards are shuffled by (seed, epoch); when there are at least as many shards as
slots, a rank takes every world_size-th shard and a stream every S-th of those (shard-level split).
Otherwise every slot reads all shards (in one order shared by all slots) and keeps every n-th sample
(sample-level split: more reading, same disjointness). Eval uses the same rule on the manifest's order.

Epoch rule (train). An epoch is a fixed number of batches per rank, the same on every rank:
`len(loader) = ceil(num_train_samples / (world_size * b))`, with b = batch_size, or, under
max_frames_per_batch, `clamp(max_frames_per_batch // ceil(mean frames per video), 1, batch_size)`.
Each stream cycles over its share of the data (re-reading its shards, reshuffled per cycle) and the rank's
batches are dealt round-robin: stream s yields global batches s, s + S, s + 2S, ... < len(loader). So no
rank can run out of batches (no DDP hang) whatever the shard count; in return an epoch is not an exact
pass: a slot whose shards hold more or fewer samples than average sees some samples less or more often.
The batches depend on (seed, epoch, rank, world_size, S): num_workers 0 and 1 give identical batches, and
so do runs that differ only in how they were interrupted and resumed.

Eval (train=False): no shuffling, no augmentation (centre crop), each valid sample exactly once across
ranks and streams; ranks may get different batch counts, and `len()` is an estimate from the manifest
(exact without bad samples and without max_frames_per_batch). The CTC length check is not applied in
eval so that WER covers the whole split.

Soft targets (`DataConfig.soft_targets`, train split only): each data shard is read in step with the sidecar
shard of the same name (`cslr.datasets.soft_targets`); a missing sidecar or a key that differs raises
SoftTargetError naming the shard and key. The teacher's frames are not resampled with the video (the KD loss
maps student frames to teacher frames); a video whose sidecar record says the teacher skipped it is skipped here.

Bad samples are skipped and counted (`loader.skip_counts`, `loader.skipped`), each logged once per
epoch on the "cslr.data" logger with its key, shard and reason; `strict=True` raises instead.
A video that fails to decode despite passing the cheap checks is dropped from its batch; a batch left
empty is replaced by one placeholder row with `valid = False` (so that batch counts never change).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import augment
from .schema import GLOSS, META, NUM_LANDMARKS, POSE, REQUIRED_MEMBERS, RGB, SchemaError, decode_pose, unpack_jpegs
from .collate import collate, decode_jpegs
from .shards import BadSample, ShardChanged, check_jpegs, check_shard_files, ctc_min_length, iter_shard, npy_shape
from .soft_targets import SoftTargetError, check_sidecars, check_soft_members, decode_soft, zip_sidecar
from .vocab import Vocabulary
from .writer import load_manifest

log = logging.getLogger("cslr.data")

MODALITY_MEMBERS = {"rgb": RGB, "pose": POSE}
REPORTS_ONLY = "_reports_only"  # a stream's last item when it has skip reports that no batch carried


@dataclass
class DataConfig:
    data: str = ""                  # prepared folder (manifest.json, vocab.txt, shards)
    batch_size: int = 8             # max videos per batch
    max_frames_per_batch: int = 0   # 0 = no cap; else cap on B * T_max (padded frames) per batch
    num_workers: int = 2
    shuffle_buffer: int = 64        # samples
    image_size: int = 112           # square crop fed to the model (train: random crop+resize; eval: center crop+resize)
    crop_scale: tuple = (0.7, 1.0)  # area fraction of the random crop (of the largest square that fits)
    temporal_scale: float = 0.2     # train: resample the video to T * U(1-s, 1+s) frames
    pose_jitter: float = 0.01       # train: landmark noise std (normalised image units) + small global affine
    hflip: bool = False             # off by default: flipping swaps the dominant hand
    modalities: tuple = ("rgb", "pose")
    bucket_size: int = 0            # length-bucketing pool in samples (0 = 4 * batch_size)
    pin_memory: bool = True
    prefetch_factor: int = 2
    strict: bool = False            # raise on a bad sample instead of skip+count
    seed: int = 0
    soft_targets: str = ""          # sidecar folder of teacher soft targets (launch/soft_targets.py): zipped into
                                    # the "train" split's batches as soft_logp, soft_idx, soft_lengths

    @classmethod
    def from_dict(cls, saved: dict) -> "DataConfig":
        """The data section as a checkpoint or config.yaml stores it (lists for tuples; keys of older or newer
        versions that this one does not know are left out)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k in known})


@dataclass
class _Item:
    """A checked, undecoded sample with its augmentation drawn."""

    key: str
    shard: str
    gloss: str
    signer: str
    targets: list[int]
    unknown: list[str]
    num_frames: int
    frame_size: tuple | None
    params: augment.AugmentParams
    rgb: bytes | None
    pose: bytes | None
    soft: dict | None = None        # the sidecar's raw members (soft targets on), decoded with the video


# ----------------------------------------------------------------------------------------------------
# One stream: the slot's share of the data -> batches


@dataclass
class _Spec:
    """Everything a stream needs (pickled to the workers)."""
    cfg: DataConfig
    data_dir: Path
    split: str
    shards: list[tuple[str, int]]   # (file name, sample count), manifest order
    vocab: Vocabulary
    output_length: Callable[[int], int] | None
    train: bool
    rank: int
    world_size: int
    num_batches: int | None         # train: batches per epoch per rank
    pose_landmarks: int
    num_frames: int = 0             # frames of the split (manifest), for the nominal batch size
    epoch: int = 0
    start: int = 0                  # batches of the epoch already done (train)
    soft_dir: Path | None = None    # soft-target sidecar folder zipped with the data shards (None: off)
    soft_k: int = 0                 # labels per frame in the sidecars (for the placeholder row)
    sha256: dict = dataclasses.field(default_factory=dict)  # shard name -> the manifest's sha256 (checked as read)

    @property
    def num_streams(self) -> int:
        return max(1, self.cfg.num_workers)

    @property
    def pool_size(self) -> int:
        return self.cfg.bucket_size or 4 * self.cfg.batch_size


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def shuffle_buffer(items: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    """Reservoir-style shuffle: keep `size` items, emit a random one for each new one."""
    buf = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(rng.integers(size))
        buf[i], item = item, buf[i]
        yield item
    for i in rng.permutation(len(buf)):
        yield buf[i]


def cut_batches(items: list[_Item], batch_size: int, max_frames: int) -> list[list[_Item]]:
    """Sort by (augmented) length and cut greedily into batches under both caps.

    A video longer than `max_frames` on its own still forms a batch of one.
    """
    items = sorted(items, key=lambda it: it.params.num_frames_out)
    batches, cur = [], []
    for it in items:
        t = it.params.num_frames_out
        if cur and (len(cur) >= batch_size or (max_frames and (len(cur) + 1) * t > max_frames)):
            batches.append(cur)
            cur = []
        cur.append(it)
    if cur:
        batches.append(cur)
    return batches


class _Stream:
    """The batches of one slot (rank, stream) for one epoch."""

    def __init__(self, spec: _Spec, stream: int):
        self.spec, self.cfg = spec, spec.cfg
        self.stream = stream
        self.num_slots = spec.world_size * spec.num_streams
        self.slot = spec.rank * spec.num_streams + stream
        self.shard_level = len(spec.shards) >= self.num_slots
        self.rng = np.random.default_rng([self.cfg.seed, spec.epoch, self.slot, 1])
        self.reports: list[tuple[str, str, str, str]] = []  # (key, shard, reason, detail) not yet sent
        self.unknown: list[str] = []
        self.raw_index = 0  # sample-level split: position in the stream all slots read

    # -- bad input --------------------------------------------------------------------------------

    def report(self, key: str, shard: str, reason: str, detail: str) -> None:
        if self.cfg.strict:
            raise SchemaError(f"{shard}: sample {key}: {reason}: {detail}")
        self.reports.append((key, shard, reason, detail))

    # -- raw samples ------------------------------------------------------------------------------

    def shard_order(self, cycle: int) -> list[tuple[str, int]]:
        """The shards this slot reads in one pass (cycle) over its share."""
        spec, shards = self.spec, list(self.spec.shards)
        if spec.train:
            order = np.random.default_rng([self.cfg.seed, spec.epoch]).permutation(len(shards))
            shards = [shards[i] for i in order]
        if not self.shard_level:
            if spec.train and cycle > 0:  # same order on every slot: the split is by position in it
                order = np.random.default_rng([self.cfg.seed, spec.epoch, 0, cycle]).permutation(len(shards))
                shards = [shards[i] for i in order]
            return shards
        mine = shards[spec.rank::spec.world_size][self.stream::spec.num_streams]
        if cycle > 0:
            order = np.random.default_rng([self.cfg.seed, spec.epoch, self.slot, cycle]).permutation(len(mine))
            mine = [mine[i] for i in order]
        return mine

    def read(self, name: str, count: int) -> Iterator[dict]:
        """Raw samples of one shard; a shard that is missing, broken or short is reported by name."""
        n = 0
        try:
            samples = iter_shard(self.spec.data_dir / name, self.spec.sha256.get(name))
            if self.spec.soft_dir is not None:
                samples = zip_sidecar(samples, self.spec.soft_dir / name)
            for sample in samples:
                n += 1
                yield sample
        except (OSError, tarfile.TarError, ValueError, EOFError) as e:
            if isinstance(e, (SoftTargetError, ShardChanged)):  # data not as prepared: fail, never skip
                raise
            self.report(name, name, "bad_shard", f"unreadable after {n} samples ({e})")
            return
        if n < count:
            self.report(name, name, "bad_shard", f"{n} samples, manifest says {count} (truncated?)")

    def raw_samples(self, cycle: int) -> Iterator[tuple[str, dict]]:
        for name, count in self.shard_order(cycle):
            for sample in self.read(name, count):
                i, self.raw_index = self.raw_index, self.raw_index + 1
                if self.shard_level or i % self.num_slots == self.slot:
                    yield name, sample

    def items(self, cycle: int) -> Iterator[_Item]:
        """The checked samples of one pass (cycle) over the slot's share."""
        for shard, sample in self.raw_samples(cycle):
            try:
                yield self.prepare(sample, shard, cycle)
            except BadSample as e:
                self.report(sample.get("__key__", "?"), shard, e.reason, e.detail)

    def prepare(self, sample: dict, shard: str, cycle: int) -> _Item:
        """Check a raw sample without decoding it and draw its augmentation. Raises BadSample."""
        spec, cfg = self.spec, self.cfg
        key = sample["__key__"]
        for member in REQUIRED_MEMBERS + tuple(MODALITY_MEMBERS[m] for m in cfg.modalities):
            if member not in sample:
                raise BadSample("missing_member", f"no {member}")
        try:
            gloss = " ".join(sample[GLOSS].decode("utf-8").split())
            meta = json.loads(sample[META])
            num_frames = int(meta["num_frames"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise BadSample("corrupt_member", f"gloss.txt/meta.json unreadable ({e!r})") from e
        if num_frames <= 0:
            raise BadSample("zero_frames", f"meta.json num_frames = {num_frames}")
        if "rgb" in cfg.modalities:
            check_jpegs(sample[RGB], num_frames)
        frame_size = meta.get("frame_size") or meta.get("orig_size")
        if "pose" in cfg.modalities:
            shape = npy_shape(sample[POSE])
            if len(shape) != 3 or shape[1:] != (spec.pose_landmarks, 3):
                raise BadSample("corrupt_member", f"{POSE} shape {shape}, expected (T, {spec.pose_landmarks}, 3)")
            if shape[0] != num_frames:
                raise BadSample("frame_count_mismatch", f"{POSE} has {shape[0]} frames, meta.json says {num_frames}")
            if "rgb" not in cfg.modalities and not frame_size:
                raise BadSample("corrupt_member", "meta.json has no frame_size (needed to crop the pose)")
        soft = None
        if spec.soft_dir is not None:
            soft = check_soft_members(sample)  # raises BadSample for a video the teacher skipped
        targets, unknown = spec.vocab.encode(gloss)
        rng = np.random.default_rng([cfg.seed, spec.epoch, self.slot, cycle, _key_hash(key)])
        params = augment.draw_params(rng, num_frames, train=spec.train, crop_scale=cfg.crop_scale,
                                     temporal_scale=cfg.temporal_scale, pose_jitter=cfg.pose_jitter, hflip=cfg.hflip)
        if spec.train:
            t_out = params.num_frames_out
            t_model = spec.output_length(t_out) if spec.output_length else t_out
            if ctc_min_length(targets) > t_model:
                raise BadSample("ctc_too_long", f"{len(targets)} glosses need {ctc_min_length(targets)} CTC "
                                                f"steps, the model gives {t_model} for {t_out} frames")
        return _Item(key, shard, gloss, str(meta.get("signer", "")), targets, unknown, num_frames,
                     tuple(frame_size) if frame_size else None, params, sample.get(RGB), sample.get(POSE), soft)

    # -- batches ----------------------------------------------------------------------------------

    def raw_batches(self) -> Iterator[list[_Item]]:
        """Undecoded batches: pass after pass in train (endless), one pass in eval.

        Shuffling and pools stop at the end of a pass, so that a batch never holds a video twice.
        """
        # A pass can be empty for a slot of the sample-level split (fewer samples than slots); only
        # many empty passes in a row mean that the slot can never fill its batches.
        max_empty = 1 if self.shard_level else self.num_slots + 1
        empty = 0
        for cycle in itertools.count() if self.spec.train else [0]:
            items = self.items(cycle)
            if self.spec.train:
                items = shuffle_buffer(items, self.cfg.shuffle_buffer, self.rng)
            empty += 1
            while pool := list(itertools.islice(items, self.spec.pool_size)):
                empty = 0
                batches = cut_batches(pool, self.cfg.batch_size, self.cfg.max_frames_per_batch)
                if self.spec.train:
                    batches = [batches[i] for i in self.rng.permutation(len(batches))]
                yield from batches
            if self.spec.train and empty >= max_empty:
                shards = [n for n, _ in self.shard_order(0)]
                raise RuntimeError(f"rank {self.spec.rank} stream {self.stream}: no usable sample in {shards} "
                                   f"(split {self.spec.split!r}) in {empty} passes; cannot fill the epoch")

    def __iter__(self) -> Iterator[dict]:
        spec, streams = self.spec, self.spec.num_streams
        raw = self.raw_batches()
        if not spec.train:
            for items in raw:
                yield self.decode(items)
        else:
            for g in range(self.stream, spec.num_batches, streams):  # this stream's global batch indices
                items = next(raw)
                if g >= spec.start:  # earlier batches were yielded before the resume: skip undecoded
                    yield self.decode(items)
        if self.reports or self.unknown:  # reports after the last batch (a missing last shard): sent on their own
            yield {REPORTS_ONLY: True, "_skipped": self.reports, "_unknown": self.unknown}
            self.reports, self.unknown = [], []

    # -- decoding ---------------------------------------------------------------------------------

    def decode_item(self, it: _Item) -> dict:
        """One video, augmented: "rgb" (U, 3, S, S) uint8 (channels_last) of the U distinct frames it needs and
        "rgb_index" (T',) int64, its frames in order (`collate` expands them); "pose" (T', K, 3) float32."""
        p, size = it.params, self.cfg.image_size
        idx = augment.temporal_indices(it.num_frames, p.num_frames_out)  # (T',)
        out = {}
        if it.rgb is not None:
            jpegs = unpack_jpegs(it.rgb)
            uniq, inverse = torch.unique(idx, return_inverse=True)  # decode each needed frame once
            frames = decode_jpegs([jpegs[i] for i in uniq.tolist()])  # U x (H, W, 3)
            height, width = frames[0].shape[:2]
            box = augment.crop_box(height, width, p)
            out["rgb"] = augment.crop_resize_hwc(frames, box, size, p.flip)  # (U, 3, S, S)
            out["rgb_index"] = inverse
        else:
            height, width = it.frame_size
            box = augment.crop_box(height, width, p)
        if it.pose is not None:
            pose = torch.from_numpy(decode_pose(it.pose).astype(np.float32))[idx]  # (T', K, 3)
            out["pose"] = augment.transform_pose(pose, height, width, box, p)
        if it.soft is not None:  # the teacher's frames, not resampled: the KD loss maps frames
            out["soft_logp"], out["soft_idx"] = decode_soft(it.soft)  # (T'', K) float32, (T'', K) int64
        return out

    def decode(self, items: list[_Item]) -> dict:
        rows, kept = [], []
        for it in items:
            try:
                rows.append(self.decode_item(it))
                kept.append(it)
            except Exception as e:  # a codec error on bytes that passed the cheap checks
                self.report(it.key, it.shard, "decode_error", repr(e))
        batch = collate(rows, kept, self.cfg, self.spec.pose_landmarks, self.spec.soft_k if self.spec.soft_dir else 0)
        for it in kept:
            self.unknown.extend(it.unknown)
        batch["_skipped"], self.reports = self.reports, []
        batch["_unknown"], self.unknown = self.unknown, []
        return batch


class _StreamDataset(IterableDataset):
    """Runs the stream of the current worker. On a resume at batch k, worker w runs stream (w + k) % S so that
    the DataLoader's round-robin over workers (starting at worker 0) yields global batch k first."""

    def __init__(self, spec: _Spec):
        self.spec = spec

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        shift = self.spec.start if self.spec.train else 0
        return iter(_Stream(self.spec, (worker + shift) % self.spec.num_streams))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is per worker; intra-op threads would only oversubscribe


# ----------------------------------------------------------------------------------------------------
# The loader


class StreamLoader:
    """Iterable over the batches of one rank; resumable with `state_dict`/`load_state_dict`.

    `set_epoch(e)` starts epoch e from its first batch, except when the loader sits mid-way in epoch e
    (after `load_state_dict`, or after a loop that broke off): then it keeps that position, so that the
    usual `load_state_dict(...); for epoch in ...: set_epoch(epoch)` resumes where the checkpoint was.
    """

    def __init__(self, spec: _Spec):
        self.spec = spec
        self.epoch = 0
        self.batches_done = 0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.skip_counts: collections.Counter = collections.Counter()
        self.skipped: list[tuple[str, str]] = []
        self.unknown_glosses: collections.Counter = collections.Counter()  # gloss -> occurrences dropped from targets
        self._seen: set[tuple[str, str]] = set()

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch and 0 < self.batches_done < len(self) and self.spec.train:
            log.info("resuming epoch %d at batch %d of %d", epoch, self.batches_done, len(self))
            return
        self.epoch, self.batches_done = int(epoch), 0
        self._reset_counters()

    def __len__(self) -> int:
        if self.spec.train:
            return self.spec.num_batches
        return _estimate_eval_batches(self.spec)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise ValueError(f"loader state {state}: batches_done must be in [0, {len(self)}]")
        self.epoch, self.batches_done = epoch, done
        self._reset_counters()

    def _absorb(self, batch: dict) -> None:
        """Take the workers' reports off a batch into the counters; log each bad sample once per epoch."""
        for key, shard, reason, detail in batch.pop("_skipped"):
            if (key, reason) in self._seen:
                continue
            self._seen.add((key, reason))
            self.skip_counts[reason] += 1
            self.skipped.append((key, reason))
            log.warning("skipped %s (%s, split %s): %s: %s", key, shard, self.spec.split, reason, detail)
        self.unknown_glosses.update(batch.pop("_unknown"))

    def __iter__(self) -> Iterator[dict]:
        spec, cfg = self.spec, self.spec.cfg
        if not spec.train:  # eval is always a full pass
            self.batches_done = 0
            self._reset_counters()
        dataset = _StreamDataset(dataclasses.replace(spec, epoch=self.epoch, start=self.batches_done))
        workers = cfg.num_workers
        loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                            pin_memory=cfg.pin_memory and torch.cuda.is_available(),
                            prefetch_factor=cfg.prefetch_factor if workers else None,
                            persistent_workers=False, worker_init_fn=_worker_init if workers else None,
                            # Its own generator: creating an iterator must not draw from the global torch RNG,
                            # or a resumed run's dropout would differ from an uninterrupted one.
                            generator=torch.Generator().manual_seed(cfg.seed * 100003 + self.epoch))
        for batch in loader:
            self._absorb(batch)
            if batch.pop(REPORTS_ONLY, False):
                continue
            self.batches_done += 1
            yield batch


def _nominal_batch_size(cfg: DataConfig, num_samples: int, num_frames: int) -> int:
    if not cfg.max_frames_per_batch:
        return cfg.batch_size
    mean_frames = max(1, math.ceil(num_frames / max(1, num_samples)))
    return max(1, min(cfg.batch_size, cfg.max_frames_per_batch // mean_frames))


def _estimate_eval_batches(spec: _Spec) -> int:
    """This rank's eval batch count from the manifest's sample counts (pools cut into nominal batches)."""
    cfg, streams = spec.cfg, spec.num_streams
    slots = spec.world_size * streams
    counts = [c for _, c in spec.shards]
    total = sum(counts)
    b = _nominal_batch_size(cfg, total, spec.num_frames)
    pool = spec.pool_size
    n_batches = 0
    for stream in range(streams):
        slot = spec.rank * streams + stream
        if len(counts) >= slots:
            n = sum(counts[spec.rank::spec.world_size][stream::streams])
        else:
            n = max(0, (total - slot + slots - 1) // slots)
        n_batches += (n // pool) * math.ceil(pool / b) + math.ceil((n % pool) / b)
    return n_batches


def build_loader(cfg: DataConfig, split: str, vocab: Vocabulary, *, train: bool, rank: int = 0, world_size: int = 1,
                 output_length: Callable[[int], int] | None = None) -> StreamLoader:
    """The streaming loader of one split for one rank.

    Args:
        cfg: data settings; `cfg.data` is a folder written by launch/prepare.py.
        split: "train", "dev" or "test" (a key of the manifest's "splits").
        vocab: targets are `vocab.encode(gloss)`; unknown glosses are dropped from the targets and counted.
        train: shuffle + augment + fixed batches per epoch (see the module docstring), else one plain pass.
        rank, world_size: this process's place among the data-parallel processes.
        output_length: the model's output steps for T input frames, for the CTC feasibility check (train).

    Batches: "rgb" uint8 (B, T, 3, S, S) and/or "pose" float32 (B, T, K, 3) (NaN = landmark not detected,
    0 in padding), "lengths" int64 (B,), "mask" bool (B, T), "targets" int64 (B, L) zero padded,
    "target_lengths" int64 (B,), "keys", "signers", "glosses" (raw strings) lists of B, "valid" bool (B,).
    With `cfg.soft_targets` and split "train", also "soft_logp" float32 (B, T'', K) and "soft_idx" int64
    (B, T'', K) zero padded, "soft_lengths" int64 (B,): the teacher's frames of each video.
    """
    manifest = load_manifest(cfg.data)
    if split not in manifest["splits"]:
        raise KeyError(f"{cfg.data}/manifest.json: no split {split!r} (has {sorted(manifest['splits'])})")
    missing = set(cfg.modalities) - set(manifest.get("modalities", []))
    if missing or not set(cfg.modalities) <= set(MODALITY_MEMBERS) or not cfg.modalities:
        raise ValueError(f"{cfg.data}: modalities {list(cfg.modalities)} requested, the data has "
                         f"{manifest.get('modalities')} (known: {sorted(MODALITY_MEMBERS)})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    entry = manifest["splits"][split]
    sha256 = check_shard_files(Path(cfg.data), entry["shards"], require=train)
    shards = [(s["name"], int(s["count"])) for s in entry["shards"]]
    num_samples = sum(c for _, c in shards)
    if num_samples == 0:
        raise ValueError(f"{cfg.data}: split {split!r} has no samples")
    num_frames = int(entry.get("num_frames") or sum(s.get("frames", 0) for s in entry["shards"]))
    layout = manifest.get("pose_layout")
    pose_landmarks = sum(n for _, n in layout) if layout else NUM_LANDMARKS
    b = _nominal_batch_size(cfg, num_samples, num_frames)
    soft_dir, soft_k = None, 0
    if cfg.soft_targets and split == "train":
        soft_dir = Path(cfg.soft_targets)
        soft_k = check_sidecars(soft_dir, manifest, split, len(vocab))
    spec = _Spec(cfg=cfg, data_dir=Path(cfg.data), split=split, shards=shards, vocab=vocab,
                 output_length=output_length, train=train, rank=rank, world_size=world_size,
                 num_batches=math.ceil(num_samples / (world_size * b)) if train else None,
                 pose_landmarks=pose_landmarks, num_frames=num_frames, soft_dir=soft_dir, soft_k=soft_k, sha256=sha256)
    loader = StreamLoader(spec)
    loader.listed_keys = [k for s in entry["shards"] for k in s.get("keys", [])]  # the split's keys: accounting
    return loader


class EvalDecoder:
    """The loader's cheap checks and eval transform (centre crop, no augmentation) applied to raw samples that
    the caller reads itself, e.g. teacher inference over shards in file order (`cslr.datasets.soft_targets`).

        dec = EvalDecoder(cfg, vocab, manifest)
        items = [dec.check(sample, shard) for sample in iter_shard(path)]   # raises BadSample
        batch, failed = dec.decode(items)   # the batch of `build_loader`; failed: [(key, reason, detail)]
    """

    def __init__(self, cfg: DataConfig, vocab: Vocabulary, manifest: dict, split: str = ""):
        layout = manifest.get("pose_layout")
        cfg = dataclasses.replace(cfg, strict=False, soft_targets="")
        spec = _Spec(cfg=cfg, data_dir=Path(cfg.data), split=split, shards=[], vocab=vocab, output_length=None,
                     train=False, rank=0, world_size=1, num_batches=None,
                     pose_landmarks=sum(n for _, n in layout) if layout else NUM_LANDMARKS)
        self._stream = _Stream(spec, 0)

    def check(self, sample: dict, shard: str) -> _Item:
        """A raw sample (from `iter_shard`) checked without decoding. Raises BadSample."""
        return self._stream.prepare(sample, shard, 0)

    def decode(self, items: list[_Item]) -> tuple[dict, list[tuple[str, str, str]]]:
        """Decode and pad checked samples; a video that fails to decode is left out and returned in `failed`."""
        batch = self._stream.decode(items)
        failed = [(key, reason, detail) for key, _, reason, detail in batch.pop("_skipped")]
        batch.pop("_unknown")
        return batch, failed
