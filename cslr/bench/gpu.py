"""The GPU check: one table of what a lent GPU does with this project, in under 8 minutes on one GPU.

    python launch/gpu_check.py                   # on a CUDA machine -> docs/bench/gpu/gpu_check.{json,md}
    python launch/gpu_check.py --dry-run         # here, on CPU: every code path that runs without CUDA

Rows:
1. step: teacher_base and student_base, one optimizer step (forward, CTC + auxiliary CTC losses, backward, AdamW)
   at 224x224 on a random PHOENIX-sized batch, fp32 / bf16 autocast / fp16 autocast with a GradScaler -> ms per
   step (median, min-max), samples/s, peak memory (CUDA allocator peak).
2. ctc: cuDNN's CTC loss vs PyTorch's native CUDA kernel (cuDNN disabled) on the same log-probs, in the layout that
   lets PyTorch pick cuDNN (1-D int32 targets on the CPU, every input length = T, blank 0): loss and gradient
   differences, and whether the cuDNN kernel really ran (profiler). The trainer passes padded 2-D targets, which
   never take the cuDNN path: the row says whether switching would be safe.
3. jpeg: `torchvision.io.decode_jpeg` of PHOENIX-sized frames (260x210) on CUDA (one batched call) vs the CPU.
4. infer: student_base inference frames/s at 224x224, fp32 and fp16 autocast.
5. accelerate: `accelerate launch --num_processes 1 launch/teacher.py` of the tiny recipe (built-in tiny corpus,
   teacher_tiny, 3 epochs) to its end: results.json, test WER, the device the log names. (Accelerate refuses
   `--multi_gpu` with one process, so one GPU runs without the DDP wrapper.)

`--dry-run` (no CUDA needed): the same functions on the CPU with stand-ins (tiny presets at 32x32, short clips,
CPU decode in place of the GPU's, native CTC vs a float64 reference in place of cuDNN, the launch with
`--max_steps 2`); every such row says DRY and what stood in. The figures are then meaningless; the paths ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.profiler import ProfilerActivity, profile

from torchvision.io import decode_jpeg, encode_jpeg

from cslr.io import atomic_write_bytes, atomic_write_json, cache_dir
from cslr.models.export import example_inputs
from cslr.models.registry import build_model
from cslr.trainer.losses import teacher_loss

from .context import ROOT, cpu_info
from .timing import fps_stats, peak_memory_mb, rate, reset_peak_memory, summarize, time_calls

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PHOENIX_VOCAB = 1296        # PHOENIX-2014 glosses + blank
PHOENIX_FRAME = (260, 210)  # stored frame width x height


@dataclass
class GPUCheckConfig:
    """Sizes of the check; `dry()` gives the CPU stand-ins."""

    dry: bool = False
    device: str = "cuda"
    models: tuple[str, ...] = ("teacher_base", "student_base")
    image_size: int = 224
    batch: int = 2              # clips per training step
    frames: int = 96            # frames per clip (PHOENIX: mean 141)
    repeats: int = 5
    warmup: int = 2
    ctc_t: int = 150            # CTC check: frames, batch, labels per target
    ctc_b: int = 8
    ctc_l: int = 20
    jpeg_frames: int = 512
    infer_model: str = "student_base"
    infer_batch: int = 8
    infer_frames: int = 64
    launch_args: tuple[str, ...] = ("--epochs", "3", "--num_workers", "2")
    work: Path = field(default_factory=lambda: cache_dir() / "bench" / "gpu-check")

    @classmethod
    def dry_run(cls, **kw) -> "GPUCheckConfig":
        return cls(dry=True, device="cpu", models=("teacher_tiny", "student_tiny"), image_size=32, batch=2, frames=12,
                   repeats=2, warmup=1, ctc_t=30, ctc_b=2, ctc_l=5, jpeg_frames=16, infer_model="student_tiny",
                   infer_batch=2, infer_frames=12, launch_args=("--epochs", "1", "--max_steps", "2", "--num_workers", "0"),
                   work=cache_dir() / "bench" / "gpu-check-dry", **kw)

    def mode(self, stand_in: str = "") -> str:
        """The row's "run" column: GPU, or DRY and what stood in."""
        return "GPU" if not self.dry else f"DRY (CPU{': ' + stand_in if stand_in else ''})"


def _sync(cfg: GPUCheckConfig):
    return torch.cuda.synchronize if cfg.device == "cuda" else None


def random_batch(num_classes: int, batch: int, frames: int, size: int, device: str, seed: int = 0) -> dict:
    """A loader-shaped batch: uint8 frames (B, T, 3, S, S), landmarks (B, T, 543, 3), full lengths, 2-D targets."""
    rgb, pose = example_inputs(("rgb", "pose"), batch, frames, size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    lab = max(1, frames // 8)  # glosses per clip: PHOENIX has ~1 per 12 frames; the model downsamples by 4
    return {"rgb": rgb.to(device), "pose": pose.to(device), "lengths": torch.full((batch,), frames, device=device),
            "targets": torch.randint(1, num_classes, (batch, lab), generator=g).to(device),
            "target_lengths": torch.full((batch,), lab, device=device)}


def step_row(name: str, precision: str, cfg: GPUCheckConfig) -> dict:
    """One (model, precision) training-step row; a failure is the row's `error`, never raised."""
    row = {"check": "step", "what": f"{name} {precision}" + (" + GradScaler" if precision == "fp16" else ""),
           "run": cfg.mode(f"{name} at {cfg.image_size}x{cfg.image_size}")}
    try:
        torch.manual_seed(0)
        model = build_model(name, num_classes=PHOENIX_VOCAB).to(cfg.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = random_batch(PHOENIX_VOCAB, cfg.batch, cfg.frames, cfg.image_size, cfg.device)
        dtype = DTYPES[precision]
        scaler = torch.amp.GradScaler(cfg.device, enabled=precision == "fp16")
        aux = 0.5

        def step():
            with torch.autocast(cfg.device, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(rgb=batch["rgb"], pose=batch["pose"], lengths=batch["lengths"])
            loss, _ = teacher_loss(out, batch, aux)  # CTC in fp32 (losses.ctc_loss casts)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            return loss

        step()  # build lazy state (AdamW moments) before the memory window
        reset_peak_memory()
        seconds = time_calls(step, cfg.repeats, cfg.warmup, _sync(cfg))
        loss = float(step().detach())
        ms = summarize([1000 * s for s in seconds])
        row.update(ms_per_step=ms, samples_per_s=rate(cfg.batch, seconds), peak_memory_mb=peak_memory_mb(cfg.device),
                   loss=loss, finite=bool(torch.isfinite(torch.tensor(loss))),
                   num_parameters=sum(p.numel() for p in model.parameters()),
                   result=f"{ms['median']:.1f} ms/step ({ms['min']:.1f}-{ms['max']:.1f})",
                   detail=f"batch {cfg.batch}x{cfg.frames} frames, {cfg.batch / (ms['median'] / 1000):.1f} samples/s, "
                          f"peak {peak_memory_mb(cfg.device):.0f} MB, loss {loss:.2f}"
                          + (f", scale {scaler.get_scale():.0f}" if precision == "fp16" else ""))
        if not row["finite"]:
            row["error"] = f"non-finite loss {loss}"
        del model, opt
    except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
        row["error"] = _err(e)
    _free(cfg)
    return row


def _ctc(log_probs: torch.Tensor, targets: torch.Tensor, in_lens: torch.Tensor, tgt_lens: torch.Tensor):
    """Per-sample CTC loss and its gradient w.r.t. the log-probs (T, B, V)."""
    lp = log_probs.detach().clone().requires_grad_(True)
    loss = F.ctc_loss(lp, targets, in_lens, tgt_lens, blank=0, reduction="none", zero_infinity=True)
    loss.sum().backward()
    return loss.detach(), lp.grad.detach()


def ctc_row(cfg: GPUCheckConfig) -> dict:
    """cuDNN CTC vs the native kernel on the same input (dry: native CPU fp32 vs a float64 reference)."""
    row = {"check": "ctc", "what": "cuDNN vs native CTC" if not cfg.dry else "native CTC fp32 vs fp64",
           "run": cfg.mode("no cuDNN; native fp32 vs float64 reference")}
    try:
        g = torch.Generator().manual_seed(0)
        T, B, V, L = cfg.ctc_t, cfg.ctc_b, PHOENIX_VOCAB, cfg.ctc_l
        log_probs = torch.randn(T, B, V, generator=g).log_softmax(-1)
        tgt_lens = torch.randint(max(1, L // 2), L + 1, (B,), generator=g, dtype=torch.int32)
        targets = torch.randint(1, V, (int(tgt_lens.sum()),), generator=g, dtype=torch.int32)  # 1-D, CPU, int32
        in_lens = torch.full((B,), T, dtype=torch.int32)
        if cfg.device == "cuda":
            lp = log_probs.cuda()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                a_loss, a_grad = _ctc(lp, targets, in_lens, tgt_lens)  # cuDNN where PyTorch takes it
            used = any("cudnn_ctc" in e.key for e in prof.key_averages())
            with torch.backends.cudnn.flags(enabled=False):
                b_loss, b_grad = _ctc(lp, targets.long().cuda(), in_lens.long().cuda(), tgt_lens.long().cuda())
            names = ("cuDNN" if used else "default (cuDNN NOT taken)", "native CUDA")
        else:
            a_loss, a_grad = _ctc(log_probs, targets, in_lens, tgt_lens)
            b_loss, b_grad = _ctc(log_probs.double(), targets.long(), in_lens.long(), tgt_lens.long())
            used, names = False, ("native fp32", "native fp64")
        dl = (a_loss.double().cpu() - b_loss.double().cpu()).abs()
        rel = float((dl / b_loss.double().cpu().abs().clamp_min(1e-6)).max())
        dg = float((a_grad.double().cpu() - b_grad.double().cpu()).abs().max())
        agree = rel < 1e-4 and dg < 1e-3
        row.update(cudnn_used=used, max_rel_loss_diff=rel, max_abs_grad_diff=dg, agree=agree,
                   result=("agree" if agree else "DISAGREE") + f": loss rel {rel:.1e}, grad abs {dg:.1e}",
                   detail=f"{names[0]} vs {names[1]}; T={T}, B={B}, V={V}, labels <= {L}")
    except Exception as e:  # noqa: BLE001
        row["error"] = _err(e)
    return row


def jpeg_frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    """`n` JPEGs of PHOENIX's stored size: smooth gradients plus noise (realistic compressed size, not noise)."""
    w, h = PHOENIX_FRAME
    g = torch.Generator().manual_seed(seed)
    base = torch.stack(torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"))
    img = torch.cat([base, base.mean(0, keepdim=True)]) * 200
    distinct = []
    for i in range(min(n, 16)):
        noisy = (img + 25 * torch.rand(3, h, w, generator=g) + 3 * i).clamp(0, 255).to(torch.uint8)
        with _quiet():
            distinct.append(encode_jpeg(noisy, quality=90))
    return [distinct[i % len(distinct)] for i in range(n)]


def jpeg_rows(cfg: GPUCheckConfig) -> list[dict]:
    """GPU batched decode vs CPU decode -> two rows (frames/s) and the ratio."""
    rows = []
    try:
        data = jpeg_frames(cfg.jpeg_frames)
        w, h = PHOENIX_FRAME
        kb = sum(d.numel() for d in data) / len(data) / 1024
        with _quiet():
            cpu = fps_stats(lambda: [decode_jpeg(d) for d in data], len(data), cfg.repeats, cfg.warmup)
        rows.append({"check": "jpeg", "what": "decode_jpeg on the CPU", "run": cfg.mode(), "fps": cpu,
                     "result": f"{cpu['fps']:.0f} frames/s",
                     "detail": f"{w}x{h}, {kb:.1f} KB each, {torch.get_num_threads()} threads, one call per frame"})
        dev = cfg.device if cfg.device == "cuda" else "cpu"
        with _quiet():
            gpu = fps_stats(lambda: decode_jpeg(data, device=dev), len(data), cfg.repeats, cfg.warmup, _sync(cfg))
        rows.append({"check": "jpeg", "what": "decode_jpeg on CUDA (batched)",
                     "run": cfg.mode("decode_jpeg(list, device='cpu') stands in"), "fps": gpu,
                     "speedup_vs_cpu": gpu["fps"] / cpu["fps"],
                     "result": f"{gpu['fps']:.0f} frames/s ({gpu['fps'] / cpu['fps']:.1f}x the CPU)",
                     "detail": f"{len(data)} frames per call, input bytes on the host"})
    except Exception as e:  # noqa: BLE001
        rows.append({"check": "jpeg", "what": "decode_jpeg", "run": cfg.mode(), "error": _err(e)})
    return rows


def infer_rows(cfg: GPUCheckConfig) -> list[dict]:
    """Student inference frames/s (eval, no grad) in fp32 and fp16 autocast."""
    rows = []
    try:
        model = build_model(cfg.infer_model, num_classes=PHOENIX_VOCAB).to(cfg.device).eval()
        batch = random_batch(PHOENIX_VOCAB, cfg.infer_batch, cfg.infer_frames, cfg.image_size, cfg.device, seed=1)
    except Exception as e:  # noqa: BLE001
        return [{"check": "infer", "what": cfg.infer_model, "run": cfg.mode(), "error": _err(e)}]
    frames = cfg.infer_batch * cfg.infer_frames
    for precision in ("fp32", "fp16"):
        row = {"check": "infer", "what": f"{cfg.infer_model} {precision}",
               "run": cfg.mode(f"{cfg.infer_model} at {cfg.image_size}x{cfg.image_size}")}
        try:
            dtype = DTYPES[precision]

            def infer():
                with torch.inference_mode(), torch.autocast(cfg.device, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    return model(rgb=batch["rgb"], pose=batch["pose"], lengths=batch["lengths"])["log_probs"]

            reset_peak_memory()
            s = fps_stats(infer, frames, cfg.repeats, cfg.warmup, _sync(cfg))
            row.update(fps=s, peak_memory_mb=peak_memory_mb(cfg.device), result=f"{s['fps']:.0f} frames/s",
                       detail=f"batch {cfg.infer_batch} x {cfg.infer_frames} frames ({s['fps_min']:.0f}-{s['fps_max']:.0f}), "
                              f"peak {peak_memory_mb(cfg.device):.0f} MB")
        except Exception as e:  # noqa: BLE001
            row["error"] = _err(e)
        rows.append(row)
    del model
    _free(cfg)
    return rows


def launch_row(cfg: GPUCheckConfig) -> dict:
    """The tiny recipe under `accelerate launch` on one GPU (one process), to its end: test scored, results.json."""
    out = cfg.work / "accelerate-tiny"
    row = {"check": "accelerate", "what": "accelerate launch, 1 process, tiny recipe",
           "run": cfg.mode("ACCELERATE_USE_CPU=true, --max_steps 2")}
    shutil.rmtree(out, ignore_errors=True)
    # One process: accelerate refuses --multi_gpu below 2 processes, so this is the single-process path (no DDP
    # wrapper); the multi-rank path is tested on CPU (tests/test_trainer.py, 2-rank gloo DDP and DeepSpeed).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(ROOT / "launch" / "teacher.py"),
           "--synthetic_preset", "tiny", "--arch", "teacher_tiny", "--image_size", "32", "--batch_size", "4",
           "--report_to", "none", "--beam_width", "2", "--output_dir", str(out), *cfg.launch_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    if cfg.dry:
        env["ACCELERATE_USE_CPU"] = "true"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
        log = (out / "training.log").read_text() if (out / "training.log").is_file() else ""
        m = re.search(r"(\d+) processes \((\w+)\) on (\S+)", log)
        row.update(returncode=proc.returncode, seconds=seconds, command=cmd,
                   processes=int(m.group(1)) if m else None, distributed_type=m.group(2) if m else None,
                   device=m.group(3) if m else None)
        if proc.returncode != 0 or not (out / "results.json").is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            row["error"] = f"exit {proc.returncode}, results.json {'present' if (out / 'results.json').is_file() else 'missing'}"
            row["log_tail"] = tail
            return row
        res = json.loads((out / "results.json").read_text())
        row.update(results={k: res.get(k) for k in ("best_dev_wer", "test_wer", "global_steps", "epochs_run",
                                                    "world_size", "samples_per_s")})
        want = "cuda" if not cfg.dry else "cpu"
        if row["device"] is None or not row["device"].startswith(want):
            row["error"] = f"the run's log names device {row['device']!r}, expected {want}"
        row.update(result=f"ok in {seconds:.0f} s: {res['global_steps']} steps, dev WER {_n(res['best_dev_wer'])}, "
                          f"test WER {_n(res['test_wer'])}",
                   detail=f"{row['processes']} process ({row['distributed_type']}) on {row['device']}")
    except Exception as e:  # noqa: BLE001
        row["error"] = _err(e)
    return row


def run_check(cfg: GPUCheckConfig, log=print) -> dict:
    """Every row, in order; each timed. -> {"settings", "rows", "seconds", "ok"}."""
    if not cfg.dry and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run with --dry-run to exercise the check on the CPU")
    cfg.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: list[dict] = []

    def add(new):
        for r in (new if isinstance(new, list) else [new]):
            r["elapsed_s"] = round(time.perf_counter() - t0, 1)
            rows.append(r)
            log(f"[{r['elapsed_s']:6.1f} s] {r['check']:<10} {r['what']:<38} {r.get('result') or 'FAILED: ' + str(r.get('error'))}")

    for name in cfg.models:
        for precision in PRECISIONS:
            add(step_row(name, precision, cfg))
    add(ctc_row(cfg))
    add(jpeg_rows(cfg))
    add(infer_rows(cfg))
    add(launch_row(cfg))
    return {"settings": settings(cfg), "rows": rows, "seconds": time.perf_counter() - t0,
            "ok": all("error" not in r for r in rows)}


def settings(cfg: GPUCheckConfig) -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"dry_run": cfg.dry, "device": cfg.device, "gpu": gpu, **cpu_info(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "models": list(cfg.models), "image_size": cfg.image_size, "batch": cfg.batch, "frames": cfg.frames,
            "repeats": cfg.repeats, "warmup": cfg.warmup, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def table(report: dict) -> str:
    """The one table: check | what | run (GPU or DRY and its stand-in) | result | detail."""
    lines = ["| check | what | run | result | detail |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        result = r.get("result", "") if "error" not in r else "**FAILED**: " + " ".join(str(r["error"]).split())
        lines.append(f"| {r['check']} | {r['what']} | {r['run']} | {result} | {r.get('detail', '')} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    s = report["settings"]
    where = f"GPU {s['gpu']} (CUDA {s['cuda']}, cuDNN {s['cudnn']})" if not s["dry_run"] else \
        "DRY RUN on the CPU: stand-ins for every GPU figure; the numbers mean nothing, the code paths ran"
    return "\n".join([
        "# GPU check", "",
        f"{where}; torch {s['torch']}, torchvision {s['torchvision']}; {s['date']}; {report['seconds']:.0f} s in all. "
        f"Steps: batch {s['batch']} x {s['frames']} frames at {s['image_size']}x{s['image_size']}, median (min-max) of "
        f"{s['repeats']} after {s['warmup']} warm-up. Reproduce: "
        f"`python launch/gpu_check.py{' --dry-run' if s['dry_run'] else ''}`.", "",
        table(report), ""])


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_bytes(out / "gpu_check.md", markdown(report).encode())


# ------------------------------------------------------------------------------------------------ helpers
def _err(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _n(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _free(cfg: GPUCheckConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.empty_cache()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _quiet():
    """torchvision 0.29 deprecates its JPEG codecs in favour of torchcodec: one warning per call otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
