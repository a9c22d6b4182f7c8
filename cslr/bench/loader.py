"""Loader benchmark: the project's shard pipeline vs the per-frame PNG Dataset most CSLR code uses.

    python -c "from pathlib import Path; from cslr.bench import loader, context; \
        print(loader.run(context.BenchContext(out=Path('bench'))).markdown)"

Data: a subset of the synthetic `phoenix` preset (210x260 frames, PHOENIX-2014's length statistics), written
out as PNG folders in the official PHOENIX-2014 layout (`cslr.datasets.phoenix.export_phoenix2014`, landmarks
as `<poses>/train/<id>.npy`) and converted to shards by the project's own converter (`convert("phoenix2014")`,
the code of `python launch/prepare.py phoenix2014 ...`), both cached under `ctx.work/loader/`.

The two pipelines, measured with the same workers, batch size, pin_memory and prefetch, at image size 224:
  (a) shards: `cslr.datasets.pipeline.build_loader(..., train=True)`: shuffle, augmentation, length buckets.
  (b) png: `PngVideoDataset` + a standard `DataLoader` (shuffle, `pad_collate`): per video it lists the PNG files
      of the folder, opens the frames it needs with PIL, crops + resizes each frame with PIL, and reads the pose
      `.npy` beside the PNG tree. It draws its augmentation with the pipeline's own `augment.draw_params` and
      applies the same crop box, temporal resampling and pose transform (`augment.transform_pose`), delivering the
      same batch: uint8 (B, T, 3, 224, 224) frames + float32 (B, T, K, 3) pose + lengths.
Both deliver uint8 frames (no normalisation: the models normalise on the device).

A pass is a fresh iterator over the train split (worker start-up included for both: neither keeps workers
between epochs); one warm-up pass (page cache, imports), then `ctx.repeats` timed passes; videos/s and frames/s
count the real (unpadded) frames of the batches delivered. The headline `speedup_vs_png` compares the steady
rates, after each pass's first batch: a training epoch (5,672 PHOENIX videos) amortises the start that a
48-video pass does not; `speedup_vs_png_with_startup` is the ratio over whole passes, and the seconds to the
first batch are reported for both.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cslr.bench.context import BenchContext, SuiteResult
from cslr.bench.timing import cpu_threads, summarize
from cslr.datasets import augment
from cslr.datasets.phoenix import CORPORA, FRAMES_DIR, convert, export_phoenix2014, frame_sort_key, read_corpus_csv
from cslr.datasets.collate import decode_jpegs
from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.shards import iter_shard
from cslr.datasets.schema import RGB, unpack_jpegs
from cslr.datasets.synthetic import PRESETS, prepare_synthetic
from cslr.datasets.vocab import Vocabulary
from cslr.io import read_json_record

log = logging.getLogger("cslr.bench")

IMAGE_SIZE = 224
SHARD_SIZE = 8  # videos per shard: several shards per worker, so the workers split the data by shard


# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class BenchData:
    release: Path   # phoenix2014-release (PNG frames, CSVs)
    poses: Path     # <poses>/<split>/<id>.npy float32 landmarks
    shards: Path    # the converter's output (manifest.json, vocab.txt, train-*.tar)


def prepare_data(work: Path, num_videos: int, preset: str = "phoenix", seed: int = 0, workers: int = 2,
                 max_frames: int | None = None, png_compress_level: int = 6) -> BenchData:
    """Synthetic videos of `preset` -> PHOENIX-2014 PNG layout -> shards, made once into `work` (reused after).

    `max_frames` caps the videos' length (test sizes); the train split only.
    """
    base = PRESETS[preset]
    tag = f"{preset}-{num_videos}v-seed{seed}" + (f"-max{max_frames}" if max_frames else "")
    root = Path(work) / tag
    p = dataclasses.replace(base, name=f"{preset}-bench", num_videos={"train": num_videos, "dev": 0, "test": 0},
                            **({"max_frames": max_frames, "min_frames": min(base.min_frames, max_frames)}
                               if max_frames else {}))
    data = BenchData(root / "phoenix2014-release", root / "poses", root / "shards")
    done = root / "export.json"
    if read_json_record(done) is None:
        prepare_synthetic(root / "synthetic", p, seed=seed, workers=workers, progress=False)
        export_phoenix2014(root / "synthetic", data.release, pose_dir=data.poses, splits=("train",),
                           compress_level=png_compress_level)
        done.write_text('{"exported": true}\n')
    if read_json_record(data.shards / "manifest.json") is None:
        convert("phoenix2014", data.release, data.shards, pose_dir=data.poses, workers=workers,
                shard_size=SHARD_SIZE, splits=("train",), progress=False)
    return data


# ------------------------------------------------------------------------------------------------ baseline (b)


class PngVideoDataset(Dataset):
    """The map-style Dataset of VAC_CSLR / CorrNet style code, one item per CSV row of a PHOENIX-2014 split.

    Per video: list the folder's PNGs, draw the augmentation (`augment.draw_params`, seeded by (seed, epoch,
    index)), open each needed frame with PIL, crop + resize it to `image_size` with PIL (bilinear, antialiased
    when shrinking, as the pipeline's `F.interpolate(antialias=True)`), stack to (T', 3, S, S) uint8; pose from
    `<pose_dir>/<split>/<id>.npy` through `augment.transform_pose`. Set `.epoch` before each pass.
    """

    def __init__(self, release: Path, split: str, pose_dir: Path | None, cfg: DataConfig, train: bool = True):
        spec = CORPORA["phoenix2014"]
        corpus = Path(release) / spec.folder
        self.rows, _ = read_corpus_csv(corpus / spec.csv.format(split=split), spec)
        self.frames_dir = corpus / FRAMES_DIR.format(split=split)
        self.pose_dir = Path(pose_dir) / split if pose_dir is not None else None
        self.cfg, self.train, self.epoch = cfg, train, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row, cfg, size = self.rows[i], self.cfg, self.cfg.image_size
        folder = self.frames_dir / row.source[0].rsplit("/", 1)[0]
        files = sorted(folder.glob("*.png"), key=lambda p: frame_sort_key(p.name))
        if not files:
            raise FileNotFoundError(f"{folder}: no PNG frames (video {row.id})")
        rng = np.random.default_rng([cfg.seed, self.epoch, i])
        p = augment.draw_params(rng, len(files), train=self.train, crop_scale=cfg.crop_scale,
                                temporal_scale=cfg.temporal_scale, pose_jitter=cfg.pose_jitter, hflip=cfg.hflip)
        idx = augment.temporal_indices(len(files), p.num_frames_out).tolist()  # (T',)
        decoded, box = {}, None
        for j in dict.fromkeys(idx):  # each needed frame once, as the pipeline does
            with Image.open(files[j]) as im:
                im = im.convert("RGB")
            if box is None:
                height, width = im.height, im.width
                box = augment.crop_box(height, width, p)
            y0, x0, side = box
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
            if p.flip:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            decoded[j] = np.asarray(im)  # (S, S, 3)
        rgb = torch.from_numpy(np.stack([decoded[j] for j in idx])).permute(0, 3, 1, 2)  # (T', 3, S, S)
        out = {"key": row.id, "gloss": row.gloss, "rgb": rgb}
        if self.pose_dir is not None:
            pose = torch.from_numpy(np.load(self.pose_dir / f"{row.id}.npy", allow_pickle=False)[idx])  # (T', K, 3)
            out["pose"] = augment.transform_pose(pose.float(), height, width, box, p)
        return out


def pad_collate(items: list[dict]) -> dict:
    """Pad videos to the longest: "rgb" uint8 (B, T, 3, S, S), "pose" float32 (B, T, K, 3), "lengths" (B,),
    "mask" (B, T), "keys", "glosses"."""
    lengths = torch.tensor([it["rgb"].shape[0] for it in items], dtype=torch.int64)  # (B,)
    b, t = len(items), int(lengths.max())
    batch = {"lengths": lengths, "mask": torch.arange(t)[None] < lengths[:, None],
             "keys": [it["key"] for it in items], "glosses": [it["gloss"] for it in items]}
    for m in ("rgb", "pose"):
        if m in items[0]:
            x = torch.zeros((b, t) + items[0][m].shape[1:], dtype=items[0][m].dtype)
            for i, it in enumerate(items):
                x[i, :it[m].shape[0]] = it[m]
            batch[m] = x
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # as the shard pipeline's workers


def png_loader(dataset: PngVideoDataset, cfg: DataConfig, shuffle: bool = True) -> DataLoader:
    """A standard DataLoader over the PNG dataset with the shard pipeline's workers, batch, pinning and prefetch."""
    workers = cfg.num_workers
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, collate_fn=pad_collate,
                      num_workers=workers, pin_memory=cfg.pin_memory and torch.cuda.is_available(),
                      prefetch_factor=cfg.prefetch_factor if workers else None,
                      worker_init_fn=_worker_init if workers else None,
                      generator=torch.Generator().manual_seed(cfg.seed))


# ------------------------------------------------------------------------------------------------ measuring


def _count(batch: dict) -> tuple[int, int]:
    """(videos, real frames) of a batch of either pipeline (the shard pipeline may send a placeholder row)."""
    valid = batch["valid"] if "valid" in batch else torch.ones(len(batch["lengths"]), dtype=torch.bool)
    return int(valid.sum()), int(batch["lengths"][valid].sum())


def measure_passes(start_pass, repeats: int, warmup: int) -> dict:
    """Time full passes: `start_pass(p)` returns a fresh iterable of batches for pass p. -> stats
    ({"median","min","max","n"}) of the timed passes: videos/s and frames/s over the whole pass (worker start-up
    included), the same after the first batch ("steady_": what an epoch of thousands of videos sees; the workers
    start once per epoch), the seconds to the first batch, and the videos and frames per pass."""
    rows = []
    for p in range(warmup + repeats):
        videos = frames = 0
        t0 = time.perf_counter()
        first = None
        for batch in start_pass(p):
            v, f = _count(batch)
            if first is None:
                first = (time.perf_counter() - t0, v, f)
            videos, frames = videos + v, frames + f
        dt = time.perf_counter() - t0
        if p >= warmup:
            t1, v1, f1 = first
            rows.append({"videos_per_s": videos / dt, "frames_per_s": frames / dt, "first_batch_s": t1,
                         "steady_videos_per_s": (videos - v1) / (dt - t1),
                         "steady_frames_per_s": (frames - f1) / (dt - t1), "videos": videos, "frames": frames})
    out = {k: summarize([r[k] for r in rows]) for k in ("videos_per_s", "frames_per_s", "first_batch_s",
                                                        "steady_videos_per_s", "steady_frames_per_s")}
    return {**out, "videos_per_pass": statistics.median(r["videos"] for r in rows),
            "frames_per_pass": statistics.median(r["frames"] for r in rows)}


def shard_passes(cfg: DataConfig):
    loader = build_loader(cfg, "train", Vocabulary.load(Path(cfg.data) / "vocab.txt"), train=True)

    def start(p: int):
        loader.set_epoch(p)
        return loader
    return start


def png_passes(data: BenchData, cfg: DataConfig):
    dataset = PngVideoDataset(data.release, "train", data.poses, cfg, train=True)

    def start(p: int):
        dataset.epoch = p  # picked up by the workers started by this iterator
        return png_loader(dataset, cfg)
    return start


def _ms_per_frame(fn, frames: int, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times) / frames


def profile_frames(data: BenchData, cfg: DataConfig, videos: int = 3, repeats: int = 3) -> dict:
    """Per-frame costs, one thread, of each pipeline's two big steps on the first `videos` train videos
    (all their frames, each video's train augmentation): decode (JPEG from the shard / PNG file -> pixels)
    and crop + resize to `cfg.image_size` (one `F.interpolate` per video / one PIL resize per frame).
    -> {"shards": {"decode_ms", "resize_ms"}, "png": {...}} (best of `repeats`, ms per frame)."""
    samples = []
    for shard in sorted(data.shards.glob("train-*.tar")):
        samples += list(iter_shard(shard))
        if len(samples) >= videos:
            break
    samples = samples[:videos]
    dataset = PngVideoDataset(data.release, "train", None, cfg)
    folders = {r.id: dataset.frames_dir / r.id / "1" for r in dataset.rows}
    size, rng = cfg.image_size, np.random.default_rng(cfg.seed)
    out = {"shards": {"decode_ms": 0.0, "resize_ms": 0.0}, "png": {"decode_ms": 0.0, "resize_ms": 0.0}}
    total = 0
    with torch.inference_mode(), cpu_threads(1):  # as in a loader worker
        for s in samples:
            jpegs = unpack_jpegs(s[RGB])
            files = sorted(folders[s["__key__"]].glob("*.png"), key=lambda p: frame_sort_key(p.name))
            n = len(jpegs)
            p = augment.draw_params(rng, n, train=True, crop_scale=cfg.crop_scale)
            frames = decode_jpegs(jpegs)  # n x (H, W, 3)
            box = augment.crop_box(*frames[0].shape[:2], p)
            y0, x0, side = box
            images = [Image.open(f).convert("RGB") for f in files]
            costs = {
                ("shards", "decode_ms"): lambda: decode_jpegs(jpegs),
                ("shards", "resize_ms"): lambda: augment.crop_resize_hwc(frames, box, size),
                ("png", "decode_ms"): lambda: [Image.open(f).convert("RGB") for f in files],
                ("png", "resize_ms"): lambda: [np.asarray(im.resize((size, size), Image.Resampling.BILINEAR,
                                                                    box=(x0, y0, x0 + side, y0 + side)))
                                               for im in images],
            }
            for (pipe, step), fn in costs.items():
                out[pipe][step] += _ms_per_frame(fn, n, repeats) * n
            total += n
    return {pipe: {k: v / total for k, v in steps.items()} for pipe, steps in out.items()}


# ------------------------------------------------------------------------------------------------ the suite


def bench_config(ctx: BenchContext, data: BenchData) -> DataConfig:
    return DataConfig(data=str(data.shards), batch_size=2 if ctx.quick else 4, num_workers=ctx.workers,
                      image_size=IMAGE_SIZE, pin_memory=True, prefetch_factor=2, seed=ctx.seed)


def run(ctx: BenchContext) -> SuiteResult:
    num_videos = 4 if ctx.quick else 48
    data = prepare_data(ctx.work / "loader", num_videos, seed=ctx.seed, workers=ctx.workers,
                        max_frames=40 if ctx.quick else None, png_compress_level=1 if ctx.quick else 6)
    cfg = bench_config(ctx, data)
    repeats = min(ctx.repeats, 2) if ctx.quick else ctx.repeats
    results = {
        "shards": measure_passes(shard_passes(cfg), repeats, ctx.warmup),
        "png": measure_passes(png_passes(data, cfg), repeats, ctx.warmup),
    }
    speedup = results["shards"]["steady_videos_per_s"]["median"] / results["png"]["steady_videos_per_s"]["median"]
    with_startup = results["shards"]["videos_per_s"]["median"] / results["png"]["videos_per_s"]["median"]
    profile = profile_frames(data, cfg, videos=1 if ctx.quick else 3, repeats=1 if ctx.quick else 3)
    settings = {"videos": num_videos, "frame_size": [260, 210], "image_size": cfg.image_size,
                "batch_size": cfg.batch_size, "workers": cfg.num_workers, "pin_memory": cfg.pin_memory,
                "prefetch_factor": cfg.prefetch_factor, "repeats": repeats, "warmup": ctx.warmup,
                "worker_startup": "included (fresh iterator per pass, non-persistent workers)",
                "baseline_pose": "float32 .npy beside the PNG tree (the converter's --pose-dir input)",
                "shard_bytes": sum(f.stat().st_size for f in data.shards.glob("train-*.tar")),
                "png_bytes": sum(f.stat().st_size for f in data.release.rglob("*.png"))}
    figures = {**results, "per_frame_ms": profile, "settings": settings}
    plot = _plot(ctx.out / "loader.png", results, profile)
    return SuiteResult(summary={"speedup_vs_png": speedup, "speedup_vs_png_with_startup": with_startup},
                       figures=figures, markdown=_markdown(ctx, results, profile, settings, speedup, with_startup),
                       plots=[plot])


def _fmt(s: dict, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _markdown(ctx: BenchContext, results: dict, profile: dict, settings: dict, speedup: float,
              with_startup: float) -> str:
    names = {"shards": "shards (cslr.datasets.pipeline)", "png": "PNG per frame (map-style Dataset, PIL)"}
    base = results["png"]["steady_videos_per_s"]["median"]
    lines = ["## loader", "",
             f"{settings['videos']} synthetic `phoenix` videos (260x210 frames, train split), PNG folders in the "
             f"PHOENIX-2014 layout ({settings['png_bytes'] / 1e6:.0f} MB) converted by `cslr.datasets.phoenix` "
             f"to JPEG shards ({settings['shard_bytes'] / 1e6:.0f} MB). Batches of uint8 (B, T, 3, "
             f"{settings['image_size']}, {settings['image_size']}) + pose, train augmentation (random crop + resize, "
             f"temporal rescale, pose jitter), batch {settings['batch_size']}, {settings['workers']} workers, "
             f"prefetch {settings['prefetch_factor']}, pin_memory {settings['pin_memory']} (CUDA only), device "
             f"{ctx.device}. Median (min-max) of {settings['repeats']} full passes after {settings['warmup']} warm-up, "
             "a fresh iterator per pass (workers start per pass, as per epoch in training). Steady = after the first "
             "batch (an epoch of thousands of videos amortises the start); whole pass = start-up included.", "",
             "| pipeline | videos/s steady | frames/s steady | speedup steady | videos/s whole pass | first batch s "
             "| decode ms/frame | resize ms/frame |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("shards", "png"):
        r, pr = results[key], profile[key]
        lines.append(f"| {names[key]} | {_fmt(r['steady_videos_per_s'], 2)} | {_fmt(r['steady_frames_per_s'], 0)} | "
                     f"{r['steady_videos_per_s']['median'] / base:.2f}x | {_fmt(r['videos_per_s'], 2)} | "
                     f"{_fmt(r['first_batch_s'], 2)} | {pr['decode_ms']:.2f} | {pr['resize_ms']:.2f} |")
    met = "met" if speedup >= 5 else "not met"
    lines += ["", f"Target (shard loader >= 5x the PNG Dataset's videos/s, same workers): **{met}** "
                  f"({speedup:.2f}x steady; {with_startup:.2f}x over whole {settings['videos']}-video passes with the "
                  "worker start-up). Per-frame costs (one thread, best of a few calls): decode = JPEG from the shard "
                  "vs PNG file through PIL; resize = one antialiased `F.interpolate` per video vs one PIL resize per "
                  "frame.", ""]
    return "\n".join(lines)


def _plot(path: Path, results: dict, profile: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["shards", "png"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.5))
    med = [results[k]["steady_videos_per_s"]["median"] for k in labels]
    err = [[m - results[k]["steady_videos_per_s"]["min"] for m, k in zip(med, labels)],
           [results[k]["steady_videos_per_s"]["max"] - m for m, k in zip(med, labels)]]
    ax.bar(labels, med, yerr=err, capsize=4, color=["tab:blue", "tab:gray"])
    ax.set_ylabel("videos/s after the first batch")
    ax.set_title("ready batches, same workers")
    dec = [profile[k]["decode_ms"] for k in labels]
    res = [profile[k]["resize_ms"] for k in labels]
    bx.bar(labels, dec, label="decode")
    bx.bar(labels, res, bottom=dec, label="crop + resize")
    bx.set_ylabel("ms per frame (one thread)")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
