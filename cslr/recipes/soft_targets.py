"""Teacher soft targets, generated across ranks into sidecar shards (the format: `cslr.datasets.soft_targets`).

    accelerate launch launch/soft_targets.py --checkpoint runs/teacher/best_model.pth --data DIR --out DIR-soft
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/soft_targets.py ...   # 2 ranks, CPU

Shard i goes to rank i % world_size: disjoint, every shard exactly once for any world size; a rank reads its
shards in file order and batches consecutive videos of one shard, so the output does not depend on the world
size. Rerunning resumes: complete sidecar shards (record, checksum, settings, data checksum) are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from cslr.datasets.pipeline import DataConfig, EvalDecoder
from cslr.datasets.shards import BadSample, iter_shard
from cslr.datasets.soft_targets import (DTYPES, FORMAT, READABLE_FORMATS, RECORDS, SETTINGS, SoftLayout,
                                        SoftTargetError, keys_sha256, payload_bytes, record_path, sample_members,
                                        select_soft, skipped_members)
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import MANIFEST, VOCAB, load_manifest, write_shard
from cslr.eval.decode import greedy_decode
from cslr.io import Progress, atomic_write_json, read_json_record, sha256_file
from cslr.models.checkpoint import model_from_checkpoint

log = logging.getLogger("cslr.soft_targets")


@dataclass
class SoftConfig:
    checkpoint: str               # the teacher's best_model.pth
    out: str                      # sidecar folder
    data: str = ""                # prepared data folder (default: the one the teacher was trained on)
    split: str = "train"
    topk: int = 10                # labels kept per frame; 0 = dense (all V)
    temperature: float = 1.0
    dtype: str = "float16"        # stored log-probabilities: float16 or float32
    batch_size: int = 8           # consecutive videos of one shard per teacher forward
    image_size: int = 0           # 0: the teacher's training image size
    overwrite: bool = False       # replace soft targets made with other settings
    max_shards: int = 0           # stop after this many shards per rank (0: all; to test resuming)


def assign_shards(names: list[str], rank: int, world_size: int) -> list[str]:
    """Shard i -> rank i % world_size: disjoint, covering, deterministic for any world size."""
    return names[rank::world_size]


def shard_complete(out: Path, entry: dict, settings: dict) -> bool:
    """A sidecar shard is complete when its record matches the settings, the data shard and the file on disk."""
    rec = read_json_record(record_path(out, entry["name"]))
    path = out / entry["name"]
    return (rec is not None and rec.get("settings") == settings and rec.get("data_sha256") == entry["sha256"]
            and path.is_file() and sha256_file(path) == rec.get("sha256"))


def _check_out_folder(out: Path, data_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix soft targets of other settings into `out` (unless overwriting), or to write into the data."""
    if out.resolve() == data_dir.resolve():
        raise SoftTargetError(f"--out {out} is the data folder: sidecars have the data shards' names")
    manifest = read_json_record(out / MANIFEST)
    if (out / MANIFEST).is_file() and (manifest is None or manifest.get("format") not in READABLE_FORMATS):
        raise SoftTargetError(f"{out / MANIFEST}: not a soft-target manifest; choose another --out")
    if overwrite:
        return
    found = ([manifest] if manifest else []) + [read_json_record(p) or {} for p in sorted((out / RECORDS).glob("*.json"))]
    for rec in found:
        theirs = rec.get("settings") or {k: rec.get(k) for k in SETTINGS}
        if theirs != settings:
            diff = {k: (theirs.get(k), settings[k]) for k in SETTINGS if theirs.get(k) != settings[k]}
            raise SoftTargetError(f"{out} holds soft targets made with other settings ({{setting: (there, now)}}: "
                                  f"{diff}); use another --out, or --overwrite to replace them")


def _clear(out: Path) -> None:
    """--overwrite: remove what a generation wrote (sidecar shards, temporaries, records, manifest)."""
    for p in [*out.glob("*.tar"), *out.glob(".*.tmp-*"), *(out / RECORDS).glob("*"), out / MANIFEST]:
        if p.is_file():
            p.unlink()


class _ShardWriter:
    """Teacher inference over one data shard in file order -> its sidecar shard and completion record."""

    def __init__(self, cfg: SoftConfig, settings: dict, model, vocab, decoder, accelerator):
        self.cfg, self.settings, self.model, self.vocab = cfg, settings, model, vocab
        self.decoder, self.acc = decoder, accelerator
        self.layout = SoftLayout.of(cfg.topk, settings["vocab_size"], cfg.dtype)

    def skipped(self, key: str, reason: str) -> tuple[dict, dict]:
        """(members, note) of a video without soft targets."""
        return skipped_members(key, self.layout), {"frames": 0, "skipped": reason}

    def batches(self, path: Path, order: list, records: dict) -> Iterator[tuple[dict, int]]:
        """Decoded batches of consecutive videos of one data shard in file order, with the number of videos each
        accounts for; the keys read go to `order`, videos that fail a check or the decode to `records` (key ->
        (members, note))."""
        pending, checked_out = [], 0

        def flush():
            batch, failed = self.decoder.decode(pending)
            for key, reason, detail in failed:
                records[key] = self.skipped(key, f"{reason}: {detail}")
            return batch, len(pending) + checked_out

        try:
            for sample in iter_shard(path):
                key = sample["__key__"]
                order.append(key)
                try:
                    pending.append(self.decoder.check(sample, path.name))
                except BadSample as e:
                    records[key] = self.skipped(key, f"{e.reason}: {e.detail}")
                    checked_out += 1
                if len(pending) == self.cfg.batch_size:
                    yield flush()
                    pending, checked_out = [], 0
        except (OSError, tarfile.TarError, ValueError, EOFError) as e:
            raise SoftTargetError(f"{path}: unreadable after {len(order)} samples ({e})") from e
        if pending or checked_out:
            yield flush() if pending else ({"valid": torch.zeros(1, dtype=torch.bool)}, checked_out)

    @torch.no_grad()
    def run_batch(self, batch: dict, records: dict) -> None:
        """Teacher forward on a decoded batch; its videos' records go into `records` by key."""
        if not bool(batch["valid"].any()):
            return
        dev = self.acc.device
        inputs = {m: batch[m].to(dev, non_blocking=True) for m in ("rgb", "pose") if m in batch}
        with self.acc.autocast():
            out = self.model(**inputs, lengths=batch["lengths"].to(dev))
        lp, lens = out["log_probs"].float(), out["lengths"]  # (B, T', V), (B,)
        logp, idx = select_soft(lp, self.cfg.temperature, self.cfg.topk, self.cfg.dtype)  # (B, T', K) each
        finite = torch.isfinite(lp).flatten(1).all(1).cpu()  # padded frames are finite too (masked features)
        hyps = greedy_decode(lp.cpu(), lens.cpu())
        logp, lens = logp.cpu().numpy(), lens.cpu().tolist()
        idx = None if idx is None else idx.cpu().numpy()
        for i, key in enumerate(batch["keys"]):
            if not finite[i]:
                records[key] = self.skipped(key, "non_finite: the teacher's log-probabilities are not finite")
                continue
            records[key] = sample_members(key, self.layout, logp[i, :lens[i]],
                                          None if idx is None else idx[i, :lens[i]], hyps[i]), {"frames": int(lens[i])}

    def write(self, data_dir: Path, out: Path, entry: dict, bar) -> dict:
        """Generate, write atomically, then record the sidecar shard of one data shard entry."""
        name = entry["name"]
        for stale in out.glob(f".{name}.tmp-*"):  # left by a process killed while writing this shard
            stale.unlink()
        records, order = {}, []
        # JPEG decoding (torch ops, GIL released) of the next batches overlaps the teacher's forward.
        for batch, n in prefetch(self.batches(data_dir / name, order, records), depth=2):
            self.run_batch(batch, records)
            bar.update(n)
        if order != entry["keys"]:
            raise SoftTargetError(f"{data_dir / name}: keys differ from {data_dir / MANIFEST} "
                                  f"({len(order)} read, {len(entry['keys'])} listed); the data changed after preparing")
        written = write_shard(out / name, [records[k][0] for k in order])
        notes = [(k, records[k][1]) for k in order]
        skipped = [{"id": k, "reason": n["skipped"]} for k, n in notes if "skipped" in n]
        frames = sum(n["frames"] for _, n in notes)
        payload = sum(payload_bytes(records[k][0]) for k in order)
        record = {"name": name, "count": written["count"], "sha256": written["sha256"], "frames": frames,
                  "bytes": written["bytes"], "payload_bytes": payload,
                  "keys_sha256": keys_sha256(order), "data_sha256": entry["sha256"], "skipped": skipped,
                  "settings": self.settings}
        atomic_write_json(record_path(out, name), record)
        return record


def prefetch(iterator: Iterator, depth: int) -> Iterator:
    """The items of `iterator`, produced in a background thread up to `depth` ahead; its errors are re-raised."""
    q: queue.Queue = queue.Queue(depth)
    end = object()

    def work():
        try:
            for item in iterator:
                q.put((item, None))
            q.put((end, None))
        except BaseException as e:  # re-raised in the consumer
            q.put((end, e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        item, error = q.get()
        if item is end:
            thread.join()
            if error is not None:
                raise error
            return
        yield item


def _data_config(ck: dict, cfg: SoftConfig, data_dir: Path, streams: tuple[str, ...]) -> DataConfig:
    """The teacher's data settings (eval transform), on this data, with this image size."""
    dc = DataConfig.from_dict(ck["config"].get("data", {}))
    return dataclasses.replace(dc, data=str(data_dir), batch_size=cfg.batch_size, num_workers=0, soft_targets="",
                               modalities=streams,
                               image_size=cfg.image_size or dc.image_size, strict=False)


def generate(cfg: SoftConfig, accelerator) -> dict | None:
    """Every rank: generate its shards' sidecars (skipping complete ones); rank 0 then writes manifest.json.

    Returns the manifest when every shard is complete (on every rank), else None (`max_shards` stopped early).
    """
    acc = accelerator
    model, vocab, ck = model_from_checkpoint(cfg.checkpoint)
    data_dir = Path(cfg.data or ck["config"].get("data", {}).get("data", ""))
    manifest = load_manifest(data_dir)
    if cfg.split not in manifest["splits"]:
        raise SoftTargetError(f"{data_dir / MANIFEST}: no split {cfg.split!r} (has {sorted(manifest['splits'])})")
    if Vocabulary.load(data_dir / VOCAB).glosses != vocab.glosses:
        raise SoftTargetError(f"{cfg.checkpoint}: the teacher's vocabulary differs from {data_dir / VOCAB}")
    if cfg.topk < 0 or cfg.topk > len(vocab) or not cfg.temperature > 0 or cfg.dtype not in DTYPES:
        raise SoftTargetError(f"--topk must be in [0, {len(vocab)}] (0 = dense), --temperature > 0 and --dtype one "
                              f"of {DTYPES}, got {cfg.topk}, {cfg.temperature} and {cfg.dtype!r}")
    data_cfg = _data_config(ck, cfg, data_dir, model.cfg.streams)
    settings = {"teacher_sha256": sha256_file(cfg.checkpoint), "temperature": float(cfg.temperature),
                "topk": int(cfg.topk), "vocab_size": len(vocab), "split": cfg.split, "image_size": data_cfg.image_size,
                "dtype": cfg.dtype}
    out = Path(cfg.out)
    entries = manifest["splits"][cfg.split]["shards"]

    # Every rank checks (read-only, same answer everywhere, so a refusal stops all ranks); rank 0 clears.
    _check_out_folder(out, data_dir, settings, cfg.overwrite)
    acc.wait_for_everyone()
    if acc.is_main_process:
        (out / RECORDS).mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            _clear(out)
    acc.wait_for_everyone()
    todo = [e for e in entries if not shard_complete(out, e, settings)]  # before any rank writes
    acc.wait_for_everyone()
    if acc.is_main_process and todo and (out / MANIFEST).exists():
        (out / MANIFEST).unlink()  # stale until every shard is complete again
    mine = [e for e in todo if e["name"] in set(assign_shards([x["name"] for x in entries], acc.process_index,
                                                                   acc.num_processes))]
    if cfg.max_shards:
        mine = mine[:cfg.max_shards]
    if acc.is_main_process:
        log.info("%d of %d %s shards complete; generating %d on %d ranks (T %g, top-K %s, %s, image size %d)",
                 len(entries) - len(todo), len(entries), cfg.split, len(todo), acc.num_processes, cfg.temperature,
                 cfg.topk or "dense", cfg.dtype, data_cfg.image_size)

    model.to(acc.device).requires_grad_(False)
    writer = _ShardWriter(cfg, settings, model, vocab, EvalDecoder(data_cfg, vocab, manifest, cfg.split), acc)
    bar = Progress(sum(e["count"] for e in mine), unit="videos", desc=f"soft targets (rank 0 of {acc.num_processes})",
                   enabled=acc.is_main_process)
    t0 = time.perf_counter()
    for e in mine:
        writer.write(data_dir, out, e, bar)
    bar.close()
    acc.wait_for_everyone()
    wall = time.perf_counter() - t0
    complete = all(shard_complete(out, e, settings) for e in entries)
    result = None
    if complete:
        result = _soft_manifest(out, entries, settings, str(cfg.checkpoint), str(data_dir))
        if acc.is_main_process:
            atomic_write_json(out / MANIFEST, result)
    if acc.is_main_process:
        n = sum(e["count"] for e in todo)
        log.info("%d videos in %.1f s: %.1f videos/s over %d ranks; %s", n, wall, n / max(wall, 1e-9),
                 acc.num_processes, f"complete -> {out / MANIFEST}" if complete else
                 "incomplete (rerun to finish)")
    acc.wait_for_everyone()
    return result


def _soft_manifest(out: Path, entries: list[dict], settings: dict, checkpoint: str, data: str) -> dict:
    """manifest.json from the per-shard records (the data manifest's shard order)."""
    records = [read_json_record(record_path(out, e["name"])) for e in entries]
    skipped = [{**s, "shard": r["name"]} for r in records for s in r["skipped"]]
    return {
        "format": FORMAT, "teacher_checkpoint": checkpoint, **settings,
        "index_dtype": SoftLayout.of(settings["topk"], settings["vocab_size"], settings["dtype"]).idx_dtype,
        "data": data, "num_samples": sum(r["count"] for r in records), "skipped": skipped,
        "shards": {r["name"]: {k: r[k] for k in ("count", "sha256", "keys_sha256", "data_sha256", "frames", "bytes",
                                                  "payload_bytes")} for r in records},
    }


