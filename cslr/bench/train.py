"""Benchmark suite `train`: the cost of one optimizer step, and how long a real run waits on its loader.

    python launch/benchmark.py --suite train

1. Step cost. For the teacher and the student at the `tiny` and `small` presets (and `base` when a GPU is
   present), fp32 and bf16 autocast: one real batch of the synthetic corpus (the same batch for every model,
   augmentation off), then forward + loss + backward + AdamW step, timed `ctx.repeats` times after `ctx.warmup`
   -> ms per optimizer step, samples/s, frames/s (input frames), peak memory (CPU: the process's peak resident
   set in this window, and in brackets what the steps added to the memory in use before them; GPU: the allocator's
   peak). The teacher's loss is its training loss (CTC + auxiliary
   CTCs); the student's is offline KD (0.3 CTC + 0.7 T^2 KL against dense targets of the right shape), what
   `launch/student.py --soft_targets` computes.
2. Data wait. `launch/teacher.py` and `launch/student.py` (CTC only: no teacher needed, the same loader) run for
   a few dozen optimizer steps on the synthetic `small` corpus with `ctx.workers` loader workers; the trainer
   itself records the time blocked on the loader over the loop (`data_wait_fraction` in results.json).

CPU step figures use `ctx.threads` intra-op threads. bf16 on CPU runs where the CPU supports it (autocast on
CPUs without native bf16 is emulated and slower: the figure says so rather than hiding it).

Tests: `/work/venv/bin/pytest tests/test_benchmark.py -q`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from cslr.datasets.pipeline import DataConfig, build_loader
from cslr.datasets.vocab import Vocabulary
from cslr.eval.forward import batch_to, model_forward
from cslr.models.registry import ModelConfig, build_model
from cslr.models.student import StudentConfig
from cslr.trainer.kd import distillation_loss, soft_targets_from_log_probs
from cslr.trainer.losses import teacher_loss

from .context import ROOT, BenchContext, SuiteResult, log, run_logged, small_corpus
from .timing import cpu_threads, current_memory_mb, peak_memory_mb, rate, reset_peak_memory, summarize, time_calls

PRECISIONS = ("fp32", "bf16")


def models_for(ctx: BenchContext) -> list[str]:
    names = ["teacher_tiny", "teacher_small", "student_tiny", "student_small"]
    if ctx.device == "cuda":
        names += ["teacher_base", "student_base"]
    if ctx.quick:
        names = ["teacher_tiny", "student_tiny"]
    return names


def image_size_for(name: str, ctx: BenchContext) -> int:
    """The crop each preset trains at in this project: 32 on the synthetic corpus (configs/*.yaml), 224 for base."""
    return 224 if name.endswith("_base") else 32


def real_batch(data: Path, image_size: int, batch_size: int, modalities: tuple) -> dict:
    """The first dev batch of the corpus at `image_size` (no augmentation): a realistic, fixed input."""
    cfg = DataConfig(data=str(data), batch_size=batch_size, num_workers=0, image_size=image_size,
                     modalities=modalities, pin_memory=False)
    loader = build_loader(cfg, "dev", Vocabulary.load(data / "vocab.txt"), train=False)
    return next(iter(loader))


def dense_soft_targets(log_probs: torch.Tensor, lengths: torch.Tensor, temperature: float = 3.0) -> dict:
    """Dense targets of the shape a teacher would give: the soft-target batch keys for the offline KD loss."""
    return soft_targets_from_log_probs(log_probs.detach(), lengths, temperature, 0)


def make_step(name: str, num_classes: int, batch: dict, precision: str, device: str):
    """A closure running one optimizer step of model `name` on `batch` in `precision`; returns (step, model)."""
    model = build_model(name, num_classes=num_classes).to(device).train()  # its config's default streams
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = batch_to(batch, device)
    if isinstance(model.cfg, StudentConfig):  # students train with distillation
        with torch.no_grad():
            out = model_forward(model, batch)
        batch = {**batch, **batch_to(dense_soft_targets(out["log_probs"], out["lengths"]), device)}

        def loss_fn(out):
            return distillation_loss(out, batch, 0.7, 3.0, aux_weight=ModelConfig.aux_weight)[0]
    else:
        def loss_fn(out):
            return teacher_loss(out, batch, ModelConfig.aux_weight)[0]

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model_forward(model, batch)
        loss = loss_fn(out)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, model


def step_figures(ctx: BenchContext, data: Path) -> list[dict]:
    """Rows of step cost: one per (model, precision)."""
    num_classes = len(Vocabulary.load(data / "vocab.txt"))
    batch_size = 2 if ctx.quick else 8
    sync = torch.cuda.synchronize if ctx.device == "cuda" else None
    rows, batches = [], {}
    for name in models_for(ctx):
        size = image_size_for(name, ctx)
        if size not in batches:
            batches[size] = real_batch(data, size, batch_size if size < 224 else 2, ("rgb", "pose"))
        batch = batches[size]
        samples, frames = int(batch["lengths"].numel()), int(batch["lengths"].sum())
        for precision in PRECISIONS:
            row = {"model": name, "precision": precision, "image_size": size, "batch_size": samples,
                   "frames_per_batch": frames, "device": ctx.device}
            try:
                with cpu_threads(ctx.threads if ctx.device == "cpu" else 0):
                    step, model = make_step(name, num_classes, batch, precision, ctx.device)
                    reset_peak_memory()
                    before = current_memory_mb(ctx.device)
                    seconds = time_calls(step, ctx.repeats, ctx.warmup, sync)
                    row["peak_memory_mb"] = peak_memory_mb(ctx.device)
                    row["step_memory_mb"] = row["peak_memory_mb"] - before  # what the steps added at their peak
                row["num_parameters"] = sum(p.numel() for p in model.parameters())
                row["step_ms"] = summarize([1000 * s for s in seconds])
                row["samples_per_s"] = rate(samples, seconds)
                row["frames_per_s"] = rate(frames, seconds)
                log.info("train %-14s %s: %.0f ms/step, %.1f samples/s", name, precision, row["step_ms"]["median"],
                         row["samples_per_s"]["median"])
            except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log.info("train %-14s %s: failed (%s)", name, precision, row["error"])
            rows.append(row)
    return rows


def data_wait(ctx: BenchContext, data: Path) -> dict:
    """The trainer's own data-wait fraction for a short real run of the teacher and of the student."""
    steps = 4 if ctx.quick else 60
    out = {}
    for role, arch in (("teacher", "teacher_tiny" if ctx.quick else "teacher_small"),
                       ("student", "student_tiny" if ctx.quick else "student_small")):
        run_dir = ctx.work / f"datawait-{role}{'-quick' if ctx.quick else ''}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # a fresh run each time: a resumed one would measure nothing
        extra = ["--alpha", "0"] if role == "student" else []
        cmd = [sys.executable, str(ROOT / "launch" / f"{role}.py"), "--data", str(data), "--arch", arch,
               "--output_dir", str(run_dir), "--report_to", "none", "--num_workers", str(ctx.workers),
               "--max_steps", str(steps), "--epochs", "1", "--beam_width", "0", *extra]
        run_logged(cmd, f"data-wait run ({role})", env={"OMP_NUM_THREADS": str(ctx.threads)})
        res = json.loads((run_dir / "results.json").read_text())
        rec = res["history"][-1]
        out[role] = {"arch": arch, "workers": ctx.workers, "steps": res["global_steps"],
                     "data_wait_fraction": rec["data_wait_fraction"], "data_wait_s": rec["data_wait_s"],
                     "samples_per_s": res["samples_per_s"]}
        log.info("data wait %s (%s, %d workers): %.1f%% of the loop", role, arch, ctx.workers,
                 100 * rec["data_wait_fraction"])
    return out


def markdown(rows: list[dict], wait: dict, ctx: BenchContext) -> str:
    dev = ctx.describe()
    where = f"GPU {dev['gpu']}" if ctx.device == "cuda" else f"CPU ({dev['cpu']}, {ctx.threads} threads)"
    lines = ["## train", "",
             f"One optimizer step (forward, loss, backward, AdamW) on one real batch of the synthetic corpus, {where}; "
             f"median (min-max) of {ctx.repeats} steps after {ctx.warmup} warm-up.", "",
             "| model | precision | image | batch (frames) | ms / step | samples/s | frames/s | peak memory MB (step's own) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['precision']} | {r['image_size']} | {r['batch_size']} | "
                         f"failed: {r['error']} | | | |")
            continue
        s, sps, fps = r["step_ms"], r["samples_per_s"], r["frames_per_s"]
        lines.append(f"| {r['model']} | {r['precision']} | {r['image_size']} | {r['batch_size']} ({r['frames_per_batch']}) "
                     f"| {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) | {sps['median']:.1f} | {fps['median']:.0f} "
                     f"| {r['peak_memory_mb']:.0f} ({r['step_memory_mb']:.0f}) |")
    lines += ["", f"Data wait: time the training loop is blocked on the loader / loop time, recorded by the trainer "
                  f"over a short real run with {ctx.workers} loader workers.", "",
              "| run | steps | data wait | samples/s |", "|---|---:|---:|---:|"]
    for role, w in wait.items():
        lines.append(f"| {role} ({w['arch']}) | {w['steps']} | {100 * w['data_wait_fraction']:.1f}% | "
                     f"{w['samples_per_s']:.1f} |")
    frac = wait["teacher"]["data_wait_fraction"]
    lines += ["", f"Target: data wait below 5% for the teacher `small` preset with 2 workers: "
                  f"{'met' if frac < 0.05 else 'not met'} ({100 * frac:.1f}%)."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    names = sorted({r["model"] for r in ok}, key=[r["model"] for r in ok].index)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for j, precision in enumerate(PRECISIONS):
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            r = next((r for r in ok if r["model"] == n and r["precision"] == precision), None)
            if r:
                xs.append(i + (j - 0.5) * width)
                ys.append(r["samples_per_s"]["median"])
                lo.append(ys[-1] - r["samples_per_s"]["min"])
                hi.append(r["samples_per_s"]["max"] - ys[-1])
        ax.bar(xs, ys, width, yerr=[lo, hi], label=precision, capsize=2)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("samples / s (training)")
    ax.legend()
    ax.set_title("training step throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ctx: BenchContext) -> SuiteResult:
    data = small_corpus(ctx)
    rows = step_figures(ctx, data)
    wait = data_wait(ctx, data)
    plot(rows, ctx.out / "train.png")

    def median(model: str, precision: str, key: str):
        r = next((r for r in rows if r["model"] == model and r["precision"] == precision and key in r), None)
        return r[key]["median"] if r else None

    teacher = "teacher_tiny" if ctx.quick else "teacher_small"
    fp32, bf16 = median(teacher, "fp32", "step_ms"), median(teacher, "bf16", "step_ms")
    summary = {"data_wait_fraction": wait["teacher"]["data_wait_fraction"],
               "student_data_wait_fraction": wait["student"]["data_wait_fraction"],
               "teacher_step_ms": fp32, "teacher_bf16_speedup": fp32 / bf16 if fp32 and bf16 else None,
               "teacher_samples_per_s": median(teacher, "fp32", "samples_per_s")}
    return SuiteResult(summary=summary, figures={"steps": rows, "data_wait": wait}, markdown=markdown(rows, wait, ctx),
                       plots=["train.png"])
