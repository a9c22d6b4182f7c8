"""Recognition end to end: frames/s and ms per frame of each stage (decode, resize, landmarks, model, CTC decode) and
of the whole run, from the video file to the last gloss, and the streaming latency.

    python launch/benchmark.py --suite recognize [--threads 2] [--repeats 5]
    pytest tests/test_bench_recognize.py -q

The video: `../shared/reference/real/signing_540x720.mp4` (a real signer, 58 frames at 29.9 fps, 540x720), or
where that folder is absent a synthetic 540x720 clip written here with PyAV. Each variant is one process of
launch/recognize.py (`--threads ctx.threads --json`) given the video 1 + repeats times: the first is the warm-up,
the others give median, min and max. end_to_end_fps = frames of the file / seconds from opening it to its last gloss
(the model is loaded before; its load time is not counted).

Models: untrained students of the deployed architectures (student_small, RGB-only and rgb+pose, crop IMAGE_SIZE,
norms given trained-looking statistics) unless --student gives a trained one for the RGB-only rows: the time of a
forward pass does not depend on the weights' values, so the speed figures hold for trained models; the glosses of
an untrained model are noise. Variants: RGB-only in PyTorch, ONNX Runtime fp32 and int8 (dynamic quantisation of
the LSTM and linear layers, `cslr.bench.student.quantize_dynamic_int8`); rgb+pose in PyTorch with --pose_stride 1
and 2; streaming latency (modelled live arrival, see cslr/recipes/recognize.py) of the RGB-only PyTorch student for
a few (window, hop) settings, the default among them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from cslr.models.checkpoint import build_model, model_from_checkpoint, save_portable
from cslr.models.export import LogProbs, checkpoint_metadata, export_onnx
from cslr.trainer.config import ModelConfig, TrainConfig, plain_dict

from .context import ROOT, BenchContext, SuiteResult, cpu_info
from .report import bound
from .student import error_text, quantize_dynamic_int8
from .timing import summarize

log = logging.getLogger("cslr.bench.recognize")

REAL_VIDEO = ROOT.parent / "shared" / "reference" / "real" / "signing_540x720.mp4"
IMAGE_SIZE = 112  # crop of the deployed RGB-only student (the CPU teacher's 32 is too small for real signing)
STREAMS = ((32, 8), (24, 8), (40, 16))  # (window, hop); the first is launch/recognize.py's default
STAGES = ("decode", "resize", "landmarks", "model", "ctc_decode")
TARGET_FPS, TARGET_LATENCY = bound("recognize.rgb_fps"), bound("recognize.stream_latency_s")


def synthetic_video(path: Path, frames: int = 120, size=(720, 540), fps: float = 30.0) -> Path:
    """A 540x720 H.264 clip of drifting textured blocks (where the real video is absent)."""
    import av

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[0] // 24 + 2, size[1] // 24 + 2, 3), dtype=np.uint8).repeat(24, 0).repeat(24, 1)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.ascontiguousarray(base[i % 24:i % 24 + size[0], (2 * i) % 24:(2 * i) % 24 + size[1]])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return path


def untrained_student(path: Path, arch: str, modality: str, image_size: int) -> Path:
    """An untrained `arch` saved as a run's best_model.pth (crop `image_size`, PHOENIX's 25 fps by default), its
    BatchNorm statistics randomised as after training (speed only)."""
    if path.is_file():
        return path
    torch.manual_seed(0)
    glosses = [f"G{i:04d}" for i in range(1231)]  # PHOENIX-2014's training vocabulary size
    model, meta = build_model(ModelConfig(arch=arch, modality=modality, dropout=0.1), len(glosses) + 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    config = plain_dict(TrainConfig())
    config["data"].update(data="", image_size=image_size, modalities=modality.split("+"))
    save_portable(path, model.state_dict(), {"config": config, "vocab": glosses, **meta, "protocol": "phoenix2014"})
    return path


def onnx_variants(ckpt: Path, folder: Path) -> dict:
    """{"onnx_fp32": path, "onnx_int8": path} of `ckpt` (made once), or {name: error text}."""
    fp32, int8 = folder / "student_fp32.onnx", folder / "student_int8.onnx"
    try:
        if not fp32.is_file():
            model, vocab, ck = model_from_checkpoint(ckpt)
            size = int(ck["config"]["data"]["image_size"])
            export_onnx(model, fp32, size, metadata=checkpoint_metadata(ck, LogProbs(model).inputs, size))
    except Exception as e:  # noqa: BLE001
        return {"onnx_fp32": f"export failed: {error_text(e)}", "onnx_int8": "export failed"}
    out = {"onnx_fp32": fp32}
    try:
        out["onnx_int8"] = int8 if int8.is_file() else quantize_dynamic_int8(fp32, int8)
    except Exception as e:  # noqa: BLE001
        out["onnx_int8"] = f"quantisation failed: {error_text(e)}"
    return out


def recognize_run(ckpt: Path, video: Path, ctx: BenchContext, extra: list[str], folder: Path, name: str) -> dict:
    """One launch/recognize.py process over the video 1 + repeats times -> its JSON, with the warm-up dropped."""
    out = folder / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "launch" / "recognize.py"), "--checkpoint", str(ckpt),
           *[str(video)] * (ctx.warmup + ctx.repeats), "--threads", str(ctx.threads), "--json", str(out), *extra]
    log.info("%s: %s", name, " ".join(cmd[1:4] + extra))
    env = {k: v for k, v in os.environ.items() if k != "CSLR_CPU_THREADS"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"launch/recognize.py exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    rec = json.loads(out.read_text())
    rec["videos"] = rec["videos"][ctx.warmup:]
    return rec


def row_of(rec: dict) -> dict:
    """Median (min, max) over the repeats: end-to-end frames/s, ms per frame of each stage and overall."""
    vids = rec["videos"]
    frames = vids[0]["frames"]
    row = {"end_to_end_fps": summarize([v["end_to_end_fps"] for v in vids]),
           "realtime_factor": summarize([v["realtime_factor"] for v in vids]),
           "ms_per_frame": {k: summarize([v["ms_per_frame"][k] for v in vids]) for k in STAGES},
           "total_ms_per_frame": summarize([1000 * v["wall_s"] / frames for v in vids]),
           "frames": frames, "source_frames": vids[0]["source_frames"], "glosses": vids[0]["glosses"]}
    row["stage_fps"] = {k: (1000 / s["median"] if s["median"] > 0 else None) for k, s in row["ms_per_frame"].items()}
    if vids[0].get("stream"):
        row["latency_max_s"] = summarize([v["stream"]["latency_max_s"] or 0.0 for v in vids])
        row["latency_mean_s"] = summarize([v["stream"]["latency_mean_s"] or 0.0 for v in vids])
    return row


def _f(v, fmt=".1f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rows: dict, summary: dict, s: dict) -> str:
    lines = ["## recognize", "",
             f"`launch/recognize.py` on {s['video_desc']}, {s['threads']} threads, {s['cpu']} (load average "
             f"{s['load_avg']}); median of {s['repeats']} runs after {s['warmup']} warm-up in one process per row. "
             f"Frames/s of a stage = model-rate frames ({s['frames']} at {s['fps']:g} fps from {s['source_frames']} in "
             f"the file) / its seconds; end to end = frames in the file / seconds from opening it to the last gloss. "
             f"Models: {s['models']} at {s['image_size']}x{s['image_size']} (speed does not depend on the weights).",
             "",
             "| variant | end to end fps | x real time | decode | resize | landmarks | model | ctc decode | ms/frame |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | | |")
            continue
        st = " | ".join(_f(r["stage_fps"][k], ".0f") if r["ms_per_frame"][k]["median"] > 0 else "-" for k in STAGES)
        lines.append(f"| {name} | {_f(r['end_to_end_fps']['median'])} | {_f(r['realtime_factor']['median'], '.2f')} "
                     f"| {st} | {_f(r['total_ms_per_frame']['median'])} |")
    lines += ["", "Stage columns are frames/s of that stage alone.", "",
              "| stream (window, hop) | max latency s | mean latency s | end to end fps |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        if "latency_max_s" in r:
            lines.append(f"| {name} | {_f(r['latency_max_s']['median'], '.2f')} | "
                         f"{_f(r['latency_mean_s']['median'], '.2f')} | {_f(r['end_to_end_fps']['median'])} |")
    b = summary
    lines += ["", f"- RGB-only end to end >= {TARGET_FPS:g} frames/s: "
              + ("n/a" if b["rgb_fps"] is None else ("met" if b["rgb_fps"] >= TARGET_FPS else "NOT met")
                 + f" ({_f(b['rgb_fps'])} frames/s, {b['rgb_runtime']})"),
              f"- streaming gloss within {TARGET_LATENCY:g} s of its last frame (default window): "
              + ("n/a" if b["stream_latency_s"] is None else ("met" if b["stream_latency_s"] <= TARGET_LATENCY
                                                                else "NOT met") + f" ({b['stream_latency_s']:.2f} s)")]
    if b.get("pose_fps") is not None:
        lines.append(f"- rgb+pose: {b['pose_fps']:.1f} frames/s end to end with landmarks every frame, "
                     f"{_f(b.get('pose_stride2_fps'))} with --pose_stride 2: bounded by MediaPipe.")
    return "\n".join(lines) + "\n"


def run(ctx: BenchContext) -> SuiteResult:
    """Summary keys rgb_fps (fastest RGB-only runtime, end to end), rgb_runtime, stream_latency_s (default window,
    max over the glosses), pose_fps, pose_stride2_fps."""
    folder = ctx.work / "recognize"
    folder.mkdir(parents=True, exist_ok=True)
    video = REAL_VIDEO if REAL_VIDEO.is_file() else synthetic_video(folder / "synthetic_540x720.mp4")
    arch, size = ("student_tiny", 32) if ctx.quick else ("student_small", IMAGE_SIZE)
    rgb = Path(ctx.student) if ctx.student else untrained_student(folder / f"{arch}_rgb_{size}.pth", arch, "rgb", size)
    pose = untrained_student(folder / f"{arch}_pose_{size}.pth", arch, "rgb+pose", size)
    runs = {"rgb pytorch": (rgb, [])}
    for name, path in onnx_variants(rgb, folder / rgb.stem).items():
        runs[f"rgb {name}"] = (path, []) if isinstance(path, Path) else path
    runs["rgb+pose pytorch, pose_stride 1"] = (pose, ["--pose_stride", "1"])
    runs["rgb+pose pytorch, pose_stride 2"] = (pose, ["--pose_stride", "2"])
    for w, h in STREAMS[:1] if ctx.quick else STREAMS:
        runs[f"stream rgb pytorch ({w}, {h})"] = (rgb, ["--stream", "--window", str(w), "--hop", str(h)])
    rows, first = {}, None
    for i, (name, spec) in enumerate(runs.items()):
        if isinstance(spec, str):
            rows[name] = {"error": spec}
            continue
        try:
            rec = recognize_run(spec[0], video, ctx, spec[1], folder, f"run{i}")
            rows[name] = row_of(rec)
            first = first or rec
        except Exception as e:  # noqa: BLE001  one variant's failure (e.g. no MediaPipe) keeps the others
            rows[name] = {"error": error_text(e)}
    ok = {n: r for n, r in rows.items() if "error" not in r}
    rgb_rows = {n: r for n, r in ok.items() if n.startswith("rgb ") and "pose" not in n}
    best = max(rgb_rows, key=lambda n: rgb_rows[n]["end_to_end_fps"]["median"]) if rgb_rows else None
    stream = ok.get(f"stream rgb pytorch {STREAMS[0]}")
    p1, p2 = ok.get("rgb+pose pytorch, pose_stride 1"), ok.get("rgb+pose pytorch, pose_stride 2")
    summary = {"rgb_fps": rgb_rows[best]["end_to_end_fps"]["median"] if best else None, "rgb_runtime": best,
               "stream_latency_s": stream["latency_max_s"]["median"] if stream else None,
               "pose_fps": p1["end_to_end_fps"]["median"] if p1 else None,
               "pose_stride2_fps": p2["end_to_end_fps"]["median"] if p2 else None}
    any_row = next(iter(ok.values()), {"frames": 0, "source_frames": 0})
    settings = {"video": str(video), "video_desc": ("the real signing video (`" + REAL_VIDEO.name + "`)")
                if video == REAL_VIDEO else "a synthetic 540x720 clip (../shared absent)",
                "threads": ctx.threads, "repeats": ctx.repeats, "warmup": ctx.warmup, "image_size": size,
                "models": f"{arch} " + ("(given checkpoint for RGB-only)" if ctx.student else "untrained"),
                "frames": any_row["frames"], "source_frames": any_row["source_frames"],
                "fps": first["fps"] if first else 25.0, "load_avg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                "quick": ctx.quick, **cpu_info()}
    return SuiteResult(summary=summary, figures={"settings": settings, "rows": rows},
                       markdown=markdown(rows, summary, settings))
