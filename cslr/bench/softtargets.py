"""Soft-target benchmark (issue #6): bytes per video, generation throughput and the KD student's dev WER for
sidecars stored three ways -- dense fp32, dense fp16 and top-K fp16 (format: cslr/datasets/soft_targets.py).

    python launch/benchmark.py --suite softtargets --out bench/      # the lead's CLI; this module is the suite
    /work/venv/bin/pytest tests/test_bench_softtargets.py -q

What runs, on the synthetic small corpus (`small_corpus`) and the benchmark teacher (`teacher_checkpoint`):
1. the real generator (`launch/soft_targets.py`, a subprocess, `--overwrite`) writes the train split's sidecars
   for each variant; throughput is the generator's own "N videos in S s" (teacher forward + packing + writing,
   without start-up), one timed generation of the whole split per variant (a full pass is the unit that matters,
   and three passes per variant would triple the suite's time; the spread is therefore not measured);
2. bytes per video: the sidecar shard files on disk / videos, and the payload (the arrays alone, as recorded by
   the generator in the manifest); `topk_size_ratio` = dense fp32 on disk / top-K on disk. The synthetic corpus
   has ~55 classes, so the same ratio is also computed for a PHOENIX-sized vocabulary (1,296 glosses + blank) with
   the real packer and tar writer on random log-probabilities of the same frame counts
   (`topk_size_ratio_phoenix_vocab`): the ratio grows with the vocabulary, the top-K payload does not;
3. one KD student per variant (`launch/student.py --soft_targets DIR`, offline targets: the same arch, seed,
   config and number of optimizer steps) and its dev WER (greedy decoding) at the end; `topk_wer_delta` = top-K
   student - dense fp32 student, in WER points. Students are cached in ctx.work per variant, step count, teacher
   and recipe (their flags and the student's sources: a rerun with the same ones reuses them).

K = 8: at the distillation temperature (T = 3, configs/student.yaml) the softened teacher spreads its mass over a
few labels per frame; the suite measures the mass the top 1/2/4/8/16 labels keep (`figures["topk_mass"]`), and 8
keeps nearly all of it while costing 25 bytes per frame at V <= 256 (34 at PHOENIX's V; one byte or two of it
the greedy hypothesis that rides along).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cslr.datasets import soft_targets as st
from cslr.datasets.writer import MANIFEST, tar_bytes

from .context import ROOT, BenchContext, SuiteResult, small_corpus, teacher_checkpoint
from .report import bound

log = logging.getLogger("cslr.bench")

TOPK = 8
TEMPERATURE = 3.0             # configs/student.yaml kd.temperature: sidecars are stored already softened
PHOENIX_CLASSES = 1296 + 1    # PHOENIX-2014 glosses + blank
MASS_KS = (1, 2, 4, 8, 16)
STUDENT_STEPS = 450           # 3 epochs of the small corpus at batch 8 (~7 minutes per student on 2 idle CPU cores),
SCHEDULE_EPOCHS = 5           # of the 5-epoch schedule (configs/student.yaml's LR warm-up and cosine over 5 epochs):
                              # the KD student is off the __ON__-only plateau there (dev WER ~60%), where a 3-epoch
                              # schedule's students all still sit at 79.4% and no WER difference could show
QUICK_STEPS = 4
SIZE_TARGET, WER_TARGET = bound("softtargets.topk_size_ratio"), bound("softtargets.topk_wer_delta")


@dataclass(frozen=True)
class Variant:
    name: str    # as in the table
    slug: str    # folder name
    topk: int    # 0 = dense
    dtype: str   # stored log-probabilities


VARIANTS = (Variant("dense fp32", "dense_fp32", 0, "float32"),
            Variant("dense fp16", "dense_fp16", 0, "float16"),
            Variant(f"top-{TOPK} fp16", f"top{TOPK}_fp16", TOPK, "float16"))


# ------------------------------------------------------------------------------------------------ generation

_RATE = re.compile(r"(\d+) videos in ([0-9.]+) s")


def generate_sidecars(ctx: BenchContext, data: Path, teacher: Path, variant: Variant, out: Path) -> dict:
    """The train split's sidecars of one variant through launch/soft_targets.py -> throughput figures.

    Returns {"videos", "seconds" (the generator's own timing), "videos_per_s", "wall_s" (with start-up)}.
    """
    cmd = [sys.executable, str(ROOT / "launch" / "soft_targets.py"), "--checkpoint", str(teacher), "--data", str(data),
           "--out", str(out), "--topk", str(variant.topk), "--dtype", variant.dtype, "--temperature", str(TEMPERATURE),
           "--overwrite"]
    env = {**_env(), "OMP_NUM_THREADS": str(ctx.threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    found = _RATE.findall(proc.stdout)
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise RuntimeError(f"soft-target generation ({variant.name}) failed (exit {proc.returncode}): "
                           f"{' '.join(cmd)}\n{tail}")
    videos, seconds = int(found[-1][0]), float(found[-1][1])
    return {"videos": videos, "seconds": seconds, "videos_per_s": videos / max(seconds, 1e-9), "wall_s": wall}


def _env() -> dict:
    import os

    return {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def sidecar_sizes(soft_dir: Path) -> dict:
    """Bytes of a complete sidecar folder: the shard files on disk and their payload (arrays alone), per video."""
    manifest = st.load_soft_manifest(soft_dir)
    videos = manifest["num_samples"]
    disk = sum((soft_dir / name).stat().st_size for name in manifest["shards"])
    payload = sum(e["payload_bytes"] for e in manifest["shards"].values())
    frames = sum(e["frames"] for e in manifest["shards"].values())
    return {"videos": videos, "frames": frames, "disk_bytes": disk, "payload_bytes": payload,
            "disk_per_video": disk / videos, "payload_per_video": payload / videos,
            "dtype": manifest["dtype"], "index_dtype": manifest["index_dtype"], "k": manifest["topk"] or
            manifest["vocab_size"], "vocab_size": manifest["vocab_size"]}


def topk_mass(dense_dir: Path, ks: tuple[int, ...] = MASS_KS) -> dict:
    """Mean (over teacher frames) probability mass of the k most probable labels at the stored temperature, read
    from dense sidecars: how much of the softened teacher a top-k sidecar keeps."""
    sums = dict.fromkeys(ks, 0.0)
    frames = 0
    for shard in sorted(dense_dir.glob("*.tar")):
        for _, logp, _, info in st.read_sidecar(shard):
            if not info["frames"]:
                continue
            p = -np.sort(-np.exp(logp.astype(np.float64)), axis=1)  # (T', V) best first
            cum = np.cumsum(p, axis=1)
            for k in ks:
                sums[k] += float(cum[:, min(k, p.shape[1]) - 1].sum())
            frames += p.shape[0]
    return {str(k): sums[k] / max(frames, 1) for k in ks}


def frames_per_video(soft_dir: Path) -> list[int]:
    """The teacher output frame count of every video of a sidecar folder, in shard order."""
    return [info["frames"] for shard in sorted(soft_dir.glob("*.tar")) for _, _, _, info in st.read_sidecar(shard)]


def writer_sizes(frames: list[int], classes: int, variant: Variant, videos_per_shard: int, seed: int = 0) -> dict:
    """Bytes per video that the real packer and tar writer produce for videos of these teacher frame counts and a
    vocabulary of `classes` labels (blank included), on random log-probabilities (sizes depend on shapes only)."""
    gen = torch.Generator().manual_seed(seed)
    layout = st.SoftLayout.of(variant.topk, classes, variant.dtype)
    disk = payload = 0
    for start in range(0, len(frames), videos_per_shard):
        records = []
        for i, t in enumerate(frames[start:start + videos_per_shard], start):
            lp = torch.randn(t, classes, generator=gen).log_softmax(-1)  # (T', V)
            logp, idx = st.select_soft(lp, TEMPERATURE, variant.topk, variant.dtype)
            rec = st.sample_members(f"video{i:06d}", layout, logp.numpy(), None if idx is None else idx.numpy())
            payload += st.payload_bytes(rec)
            records.append(rec)
        disk += len(tar_bytes(records)[0])
    return {"videos": len(frames), "disk_per_video": disk / len(frames), "payload_per_video": payload / len(frames),
            "index_dtype": layout.idx_dtype}


# ------------------------------------------------------------------------------------------------ KD students


def train_student(ctx: BenchContext, data: Path, teacher: Path, soft_dir: Path, variant: Variant, steps: int) -> dict:
    """A KD student trained offline from one variant's sidecars for `steps` optimizer steps -> its dev WER.

    The same arch (configs/student.yaml, or student_tiny with ctx.quick), seed and steps for every variant
    (the LR schedule of SCHEDULE_EPOCHS epochs, or of ceil(steps / steps per epoch) if more, stopped at `steps`).
    Cached per variant, steps, teacher and recipe (`_recipe_tag`).
    """
    steps_per_epoch = _steps_per_epoch(data, ctx)
    epochs = max(1 if ctx.quick else SCHEDULE_EPOCHS, -(-steps // steps_per_epoch))
    args = ["--data", str(data), "--soft_targets", str(soft_dir), "--teacher_checkpoint", "", "--temperature",
            str(TEMPERATURE), "--max_steps", str(steps), "--epochs", str(epochs), "--seed", str(ctx.seed),
            "--beam_width", "0", "--report_to", "none", "--resume", "auto"]
    if ctx.quick:
        args += ["--arch", "student_tiny", "--num_workers", "0", "--batch_size", "4"]
    else:
        args += ["--num_workers", str(ctx.workers)]
    out = (ctx.work / ("softtargets-quick" if ctx.quick else "softtargets")
           / f"student-{variant.slug}-{steps}-{_recipe_tag(teacher, args)}")
    args += ["--output_dir", str(out)]
    results = out / "results.json"
    cached = results.is_file()
    t0 = time.perf_counter()
    if not cached:
        cmd = [sys.executable, str(ROOT / "launch" / "student.py"), *args]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
            raise RuntimeError(f"KD student ({variant.name}) failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    res = json.loads(results.read_text())
    last = res["history"][-1]  # the evaluation after the last step: every variant at the same step count
    return {"dev_wer": last["dev_wer"], "steps": last["step"], "best_dev_wer": res.get("best_dev_wer"),
            "train_s": None if cached else time.perf_counter() - t0, "cached": cached, "dir": str(out)}


# What a cached KD student depends on besides its flags: a change to any of them retrains it.
RECIPE_FILES = ("configs/student.yaml", "cslr/models/student.py", "cslr/models/heads.py", "cslr/models/pose.py",
                "cslr/trainer/kd.py", "cslr/trainer/losses.py", "cslr/recipes/student.py")


def _recipe_tag(teacher: Path, args: list[str]) -> str:
    """Teacher file (path, mtime), the student's flags and the sources of its recipe -> an 8-hex cache tag."""
    h = hashlib.sha256(f"{teacher.resolve()}|{teacher.stat().st_mtime_ns}|{args}".encode())
    for name in RECIPE_FILES:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()[:8]


def _steps_per_epoch(data: Path, ctx: BenchContext) -> int:
    videos = json.loads((data / MANIFEST).read_text())["splits"]["train"]["num_samples"]
    return max(1, videos // (4 if ctx.quick else 8))


# ------------------------------------------------------------------------------------------------ the suite


def run(ctx: BenchContext) -> SuiteResult:
    """Generate the three variants, measure their sizes, train a KD student on each -> the `softtargets` section."""
    data, teacher = small_corpus(ctx), Path(teacher_checkpoint(ctx))
    root = ctx.work / ("softtargets-quick" if ctx.quick else "softtargets")
    steps = QUICK_STEPS if ctx.quick else STUDENT_STEPS
    rows = {}
    for v in VARIANTS:
        soft_dir = root / v.slug
        log.info("softtargets: generating %s sidecars into %s", v.name, soft_dir)
        gen = generate_sidecars(ctx, data, teacher, v, soft_dir)
        rows[v.slug] = {"name": v.name, "topk": v.topk, "dtype": v.dtype, "generation": gen,
                        "size": sidecar_sizes(soft_dir), "dir": str(soft_dir)}
    for v in VARIANTS:
        log.info("softtargets: training the KD student on %s sidecars (%d steps)", v.name, steps)
        rows[v.slug]["student"] = train_student(ctx, data, teacher, Path(rows[v.slug]["dir"]), v, steps)

    dense, top = rows[VARIANTS[0].slug], rows[VARIANTS[2].slug]
    for r in rows.values():
        r["ratio_vs_dense_fp32"] = dense["size"]["disk_per_video"] / r["size"]["disk_per_video"]
        r["payload_ratio_vs_dense_fp32"] = dense["size"]["payload_per_video"] / r["size"]["payload_per_video"]
    frames = frames_per_video(Path(dense["dir"]))
    per_shard = -(-len(frames) // len(list(Path(dense["dir"]).glob("*.tar"))))
    phoenix = {v.slug: writer_sizes(frames, PHOENIX_CLASSES, v, per_shard, ctx.seed) for v in VARIANTS}
    ph_dense, ph_top = phoenix[VARIANTS[0].slug], phoenix[VARIANTS[2].slug]
    summary = {
        "topk_size_ratio": dense["size"]["disk_per_video"] / top["size"]["disk_per_video"],
        "topk_size_ratio_phoenix_vocab": ph_dense["disk_per_video"] / ph_top["disk_per_video"],
        "topk_payload_ratio": dense["size"]["payload_per_video"] / top["size"]["payload_per_video"],
        "topk_payload_ratio_phoenix_vocab": ph_dense["payload_per_video"] / ph_top["payload_per_video"],
        "topk_wer_delta": top["student"]["dev_wer"] - dense["student"]["dev_wer"],
        "topk": TOPK,
    }
    figures = {"variants": rows, "phoenix_vocab": {"classes": PHOENIX_CLASSES, **phoenix},
               "topk_mass": topk_mass(Path(dense["dir"])), "temperature": TEMPERATURE, "student_steps": steps,
               "corpus": str(data), "teacher": str(teacher), "videos": dense["size"]["videos"],
               "mean_teacher_frames": float(np.mean(frames)), "threads": ctx.threads, "device": "cpu"}
    plots = [plot(ctx.out / "softtargets.png", rows, phoenix)]
    return SuiteResult(summary, figures, markdown(summary, figures, ctx), plots)


def _fmt_wer(s: dict) -> str:
    return f"{s['dev_wer']:.2f}" + (" (cached)" if s["cached"] else "")


def markdown(summary: dict, figures: dict, ctx: BenchContext) -> str:
    """The `## softtargets` section of bench.md: the table, the PHOENIX-vocabulary sizes, the targets."""
    rows, ph = figures["variants"], figures["phoenix_vocab"]
    steps = figures["student_steps"]
    lines = ["## softtargets", "",
             f"Train split of `{figures['corpus']}` ({figures['videos']} videos, {figures['mean_teacher_frames']:.1f} "
             f"teacher frames per video on average, {rows[VARIANTS[0].slug]['size']['vocab_size']} classes), teacher "
             f"`{figures['teacher']}`, temperature {figures['temperature']:g}; CPU, {figures['threads']} threads. "
             "Generation: one timed pass over the split per variant (launch/soft_targets.py's own timing, without "
             "start-up). KD students: configs/student.yaml" + (" (student_tiny, quick)" if ctx.quick else "") +
             f", offline targets, seed {ctx.seed}, {steps} optimizer steps each, dev WER with greedy decoding after "
             "the last step.", "",
             "| variant | stored as | bytes/video on disk | payload bytes/video | ratio vs dense fp32 (disk / payload) "
             "| gen videos/s | KD dev WER % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows.values():
        sz = r["size"]
        stored = f"logp {sz['dtype']} (T', {sz['k']})" + (f", idx {sz['index_dtype']}" if sz["index_dtype"] else "")
        lines.append(f"| {r['name']} | {stored} | {sz['disk_per_video']:,.0f} | {sz['payload_per_video']:,.0f} | "
                     f"{r['ratio_vs_dense_fp32']:.1f}x / {r['payload_ratio_vs_dense_fp32']:.1f}x | "
                     f"{r['generation']['videos_per_s']:.1f} | {_fmt_wer(r['student'])} |")
    mass = ", ".join(f"top-{k}: {v:.3f}" for k, v in figures["topk_mass"].items())
    d, t = ph[VARIANTS[0].slug], ph[VARIANTS[2].slug]
    lines += ["",
              f"PHOENIX-sized vocabulary ({ph['classes']} classes incl. blank; the real packer and tar writer on random "
              f"log-probabilities of the same frame counts): dense fp32 {d['disk_per_video']:,.0f} B/video on disk "
              f"({d['payload_per_video']:,.0f} payload), top-{TOPK} fp16 + {t['index_dtype']} ids "
              f"{t['disk_per_video']:,.0f} ({t['payload_per_video']:,.0f} payload): "
              f"**topk_size_ratio_phoenix_vocab {summary['topk_size_ratio_phoenix_vocab']:.1f}x** "
              f"(payload {summary['topk_payload_ratio_phoenix_vocab']:.0f}x).", "",
              f"Teacher probability mass kept per frame at T = {figures['temperature']:g} (from the dense sidecars): "
              f"{mass}.", ""]
    lines += _targets(summary, figures)
    return "\n".join(lines) + "\n"


def _targets(summary: dict, figures: dict) -> list[str]:
    """A sentence per target: met or not, and why."""
    ratio, ph, delta = summary["topk_size_ratio"], summary["topk_size_ratio_phoenix_vocab"], summary["topk_wer_delta"]
    v = figures["variants"][VARIANTS[0].slug]["size"]["vocab_size"]
    size = (f"- Size, top-{TOPK} >= {SIZE_TARGET:.0f}x smaller than dense fp32: on this corpus "
            f"{ratio:.1f}x ({'met' if ratio >= SIZE_TARGET else 'not met'}); at the PHOENIX vocabulary {ph:.1f}x "
            f"({'met' if ph >= SIZE_TARGET else 'not met'}).")
    if ratio < SIZE_TARGET:
        size += (f" With V = {v} classes a dense fp32 frame is only {4 * v} bytes against {3 * TOPK + 1} for top-{TOPK} "
                 f"(payload ratio {summary['topk_payload_ratio']:.1f}x at most), and each key's tar framing (one "
                 "member: a 512-byte header + padding to 512 bytes, and the npy header) is a fixed cost of about 0.9 KB that a short "
                 "synthetic video's payload does not amortise; the target is about PHOENIX-sized vocabularies.")
    steps = figures["student_steps"]
    wer = (f"- KD quality, top-{TOPK} student's dev WER within {WER_TARGET} points of the dense fp32 student's: "
           f"{delta:+.2f} points ({'met' if abs(delta) <= WER_TARGET else 'not met'}) after {steps} steps.")
    if delta < -WER_TARGET:
        mass = {int(k): v for k, v in figures["topk_mass"].items()}.get(TOPK)
        tail = f" ({1 - mass:.2f} of it at T = {figures['temperature']:g})" if mass is not None else ""
        wer += (f" The top-{TOPK} student is the better one: renormalised over its {TOPK} labels, the target drops "
                f"the teacher's tail mass{tail} and is sharper than the dense one.")
    if abs(delta) > WER_TARGET:
        wer += (" One student per variant at one seed: the difference includes seed-level training noise (the "
                "dense fp16 student shows its size for targets that differ only by fp16 rounding).")
    return [size, wer]


def plot(path: Path, rows: dict, phoenix: dict) -> str:
    """Bytes per video (log scale: on disk and payload, this corpus and the PHOENIX vocabulary) and KD dev WER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows.values()]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    series = [("disk", [r["size"]["disk_per_video"] for r in rows.values()]),
              ("payload", [r["size"]["payload_per_video"] for r in rows.values()]),
              ("disk, PHOENIX vocab", [phoenix[s]["disk_per_video"] for s in rows]),
              ("payload, PHOENIX vocab", [phoenix[s]["payload_per_video"] for s in rows])]
    for i, (label, vals) in enumerate(series):
        ax1.bar(x + (i - 1.5) * 0.2, vals, 0.2, label=label)
    ax1.set_yscale("log")
    ax1.set_xticks(x, names)
    ax1.set_ylabel("bytes per video")
    ax1.set_title("soft-target storage")
    ax1.legend(fontsize=8)
    wers = [r["student"]["dev_wer"] for r in rows.values()]
    ax2.bar(x, wers, 0.5, color="tab:green")
    for xi, w in zip(x, wers):
        ax2.text(xi, w, f"{w:.2f}", ha="center", va="bottom")
    ax2.set_xticks(x, names)
    ax2.set_ylabel("dev WER %")
    ax2.set_title(f"KD student, {next(iter(rows.values()))['student']['steps']} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name
