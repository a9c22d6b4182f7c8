"""Student inference benchmark: frames/s, size on disk and dev WER of each runtime of the trained KD student.

    python launch/benchmark.py --suite student            # through the benchmark CLI
    /work/venv/bin/pytest tests/test_bench_student.py -q  # tests

Variants of one checkpoint (`context.student_checkpoint`):
  pytorch_fp32           eager PyTorch, fp32, backbone in torchvision's NCHW layout (the reference of every WER delta)
  pytorch_channels_last  eager, backbone in channels_last (NHWC), the student's own layout
  torch_compile          torch.compile (inductor) where it works on this machine; else the reason is recorded
  onnx_fp32              ONNX Runtime on the exported graph (`cslr.models.export`: dynamic batch, time and size)
  onnx_int8_static       ONNX Runtime int8, static QDQ quantization (per-channel weights, activation ranges
                         calibrated on real training-split clips), with onnxruntime.quantization's pre-processing
  onnx_int8_dynamic      ONNX Runtime int8, dynamic quantization of the LSTM and linear layers (weights int8,
                         activations quantized per call; convs fp32, see DYNAMIC_OPS)

Speed: synthetic uint8 frames at 224x224 with `ctx.threads` CPU threads, batch 1 streaming (one clip of
`FRAMES` frames) and batched (`BATCH` clips), the median of `ctx.repeats` calls after `ctx.warmup` untimed ones,
with min and max. Quality: dev WER (PHOENIX scoring, `DECODE` decoding) of every clip run alone (batch 1, its
valid frames) at the checkpoint's own `data.image_size`, the size it was trained at. The PyTorch fp32 WER is
also taken through cslr.eval.evaluate's batched path (`decode_split`) as a check that the batch-1 path scores the
same (padding-invariant model).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cslr.eval.evaluate import decode_split, load_for_eval
from cslr.eval.wer import score
from cslr.trainer.runtime import make_accelerator

from cslr.datasets.pipeline import build_loader
from cslr.eval.decode import beam_search, greedy_decode
from cslr.eval.wer import reference_from_annotation
from cslr.models.export import LogProbs, example_inputs, export_onnx, onnx_session, run_onnx

from .context import BenchContext, SuiteResult, cpu_info, student_checkpoint
from .report import bound
from .timing import cpu_threads, rate, time_calls

log = logging.getLogger("cslr.bench.student")

SPEED_SIZE = 224            # frame size of the speed runs
FRAMES, BATCH = 32, 4       # frames per clip, clips per batched call
BEAM = 1                    # dev WER decoding: 1 = greedy CTC (cheap; the same decoding for every variant)
DECODE = "greedy" if BEAM == 1 else f"beam {BEAM}"
CALIB_CLIPS = 16            # training-split clips that calibrate the static int8 activation ranges
# Dynamic quantization of the convs too (ConvInteger) ran ~10x slower than fp32 ORT on this CPU (ConvInteger has
# no fused int8 kernel in ORT's CPU provider): dynamic int8 covers the LSTM and linear layers only.
DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM"]
TARGET_FPS, TARGET_MB, TARGET_WER = (bound(f"student.{k}") for k in ("best_fps", "best_size_mb", "best_wer_delta"))

Runner = Callable[..., np.ndarray]  # (inputs (B, T, ...) tensors) -> log-probs (B, T', V)


# ------------------------------------------------------------------------------------------------ data


def load_clips(data_cfg, vocab, split: str, limit: int = 0) -> list[dict]:
    """Every clip of `split` as the evaluation loader yields it, one per batch (no padding):
    [{"key", "signer", "glosses", "rgb" (1, T, 3, S, S) uint8, "pose" (1, T, 543, 3)}]; `limit` > 0 keeps the first."""
    import dataclasses


    loader = build_loader(dataclasses.replace(data_cfg, batch_size=1, num_workers=0), split, vocab, train=False)
    clips = []
    for batch in loader:
        if not bool(batch["valid"][0]):
            continue
        T = int(batch["lengths"][0])
        clip = {"key": batch["keys"][0], "signer": batch["signers"][0], "glosses": batch["glosses"][0]}
        clip.update({m: batch[m][:, :T] for m in ("rgb", "pose") if m in batch})
        clips.append(clip)
        if limit and len(clips) >= limit:
            break
    if not clips:
        raise ValueError(f"{data_cfg.data}: split {split!r} yielded no clips")
    return clips


def clip_wer(run: Runner, names: tuple[str, ...], clips: list[dict], vocab, protocol: str, beam: int = BEAM) -> dict:
    """Dev WER of a runner: every clip alone through `run`, decoded (`cslr.eval.decode`) and scored with the
    project's PHOENIX WER -> {"wer", "sub", "dele", "ins", "num_ref_words"}."""
    hyps, refs = {}, {}
    for clip in clips:
        lp = torch.as_tensor(np.asarray(run(*(clip[n] for n in names)))).float()  # (1, T', V)
        lengths = torch.tensor([lp.shape[1]])
        seq = (beam_search(lp, lengths, beam_width=beam) if beam > 1 else greedy_decode(lp, lengths))[0]
        hyps[clip["key"]] = vocab.decode(seq)
        refs[clip["key"]] = (clip["signer"], reference_from_annotation(clip["glosses"], protocol))
    d = score(hyps, refs, protocol=protocol).as_dict()
    return {k: d[k] for k in ("wer", "sub", "dele", "ins", "num_ref_words")}


class CalibrationClips:
    """onnxruntime.quantization CalibrationDataReader over real clips: one feed dict per clip."""
    def __init__(self, clips: list[dict], names: tuple[str, ...]):
        self.feeds = iter([{n: clip[n].numpy() for n in names} for clip in clips])

    def get_next(self):
        return next(self.feeds, None)


# ------------------------------------------------------------------------------------------------ variants


def torch_runner(model: torch.nn.Module, names: tuple[str, ...]) -> Runner:
    def run(*inputs):
        with torch.inference_mode():
            return model(**dict(zip(names, inputs)))["log_probs"].numpy()
    return run


def ort_runner(path: Path, threads: int) -> Runner:

    session = onnx_session(path, threads=threads)
    return lambda *inputs: run_onnx(session, *inputs)


def quantize_static_qdq(fp32: Path, out: Path, calib: list[dict], names: tuple[str, ...]) -> Path:
    """Static int8: ONNX Runtime's pre-processing (shape inference, graph optimisation), then QDQ quantization
    with per-channel int8 weights and activation ranges from `calib` clips (MinMax calibration)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    pre = out.with_name(out.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001  pre-processing is an optimisation; quantize the plain graph instead
        log.warning("quant_pre_process failed (%s); quantizing the exported graph as is", e)
        pre = fp32
    # Every op type ORT can quantize, not only Conv/MatMul: with the convs alone, each HardSwish, SE Mul and
    # residual Add between them sat between a DequantizeLinear and a QuantizeLinear, and the graph ran at about
    # half of fp32's speed; with them all quantized it runs int8 end to end (uint8 activations, int8 weights: the
    # U8S8 kernels of x86 VNNI).
    quantize_static(str(pre), str(out), CalibrationClips(calib, names), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    if pre != fp32:
        pre.unlink(missing_ok=True)
    return out


def quantize_dynamic_int8(fp32: Path, out: Path) -> Path:
    """Dynamic int8 of `DYNAMIC_OPS`: weights quantized offline, activations per call (MatMulInteger,
    DynamicQuantizeLSTM); the convs stay fp32 (see DYNAMIC_OPS)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS)
    return out


def error_text(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def build_variants(model, names, ctx: BenchContext, calib: list[dict], folder: Path) -> dict:
    """name -> {"run": Runner | None, "file": Path (weights on disk), "error": str | None, "note": str}."""
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "student_fp32_state_dict.pt"
    torch.save(model.state_dict(), state)
    nchw = copy.deepcopy(model)
    nchw.frames.set_layout(channels_last=False)  # torchvision's layout: the reference
    variants = {"pytorch_fp32": {"run": torch_runner(nchw, names), "file": state, "note": "eager, NCHW"}}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)  # the student's own layout (NHWC backbone)
    variants["pytorch_channels_last"] = {"run": torch_runner(cl, names), "file": state, "note": "eager, NHWC"}
    try:
        if ctx.quick or ctx.skip_compile:  # inductor's C++ compiles take ~10 minutes on 2 cores
            raise RuntimeError(f"skipped ({'--quick' if ctx.quick else '--skip_compile'})")
        # dynamic=None: shapes specialise first, then the dims that change (batch, clip length, frame size of the
        # dev clips) turn symbolic: three compiles instead of one per dev clip length up to the recompile limit
        compiled = torch.compile(copy.deepcopy(model))
        variants["torch_compile"] = {"run": torch_runner(compiled, names), "file": state, "note": "inductor"}
    except Exception as e:  # noqa: BLE001
        variants["torch_compile"] = {"run": None, "file": state, "error": error_text(e)}
    fp32 = folder / "student_fp32.onnx"
    try:
        export_onnx(model, fp32, image_size=int(calib[0]["rgb"].shape[-1]) if "rgb" in names else SPEED_SIZE)
        variants["onnx_fp32"] = {"run": ort_runner(fp32, ctx.threads), "file": fp32, "note": "ORT CPU"}
    except Exception as e:  # noqa: BLE001  no graph: no ONNX variant, the reason recorded
        for name in ("onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic"):
            variants[name] = {"run": None, "file": None, "error": f"export failed: {error_text(e)}"}
        return variants
    for name, make, note in (
        ("onnx_int8_static", lambda p: quantize_static_qdq(fp32, p, calib, names), "QDQ, per-channel, calibrated"),
        ("onnx_int8_dynamic", lambda p: quantize_dynamic_int8(fp32, p), "dynamic activations"),
    ):
        path = folder / f"student_{name[5:]}.onnx"
        try:
            variants[name] = {"run": ort_runner(make(path), ctx.threads), "file": path, "note": note}
        except Exception as e:  # noqa: BLE001
            variants[name] = {"run": None, "file": None, "error": error_text(e)}
    return variants


# ------------------------------------------------------------------------------------------------ measure


def measure_speed(run: Runner, names: tuple[str, ...], ctx: BenchContext, frames: int, batch: int) -> dict:
    """Frames/s at SPEED_SIZE: batch 1 streaming and `batch` clips -> {"b1": stats, "batched": stats}, each
    {"median", "min", "max", "n"} frames/s."""
    out = {}
    for key, b in (("b1", 1), ("batched", batch)):
        inputs = example_inputs(names, b, frames, SPEED_SIZE, seed=b)  # (b, T, 3, 224, 224) ...
        out[key] = rate(b * frames, time_calls(lambda: run(*inputs), ctx.repeats, ctx.warmup))
    return out


def measure_variant(name: str, v: dict, names, ctx, clips, vocab, protocol, frames, batch) -> dict:
    """One variant's row: size, speed and dev WER; any failure is recorded in "error", never raised."""
    row = {"name": name, "note": v.get("note", ""), "error": v.get("error"),
           "size_mb": mb(v["file"]) if v.get("file") else None, "fps_b1": None, "fps_batched": None, "dev": None}
    if v["run"] is None:
        return row
    try:
        with cpu_threads(ctx.threads):
            speed = measure_speed(v["run"], names, ctx, frames, batch)
            row["dev"] = clip_wer(v["run"], names, clips, vocab, protocol)
    except Exception as e:  # noqa: BLE001  e.g. inductor failing at the first call
        row["error"] = error_text(e)
        return row
    row["speed_b1"], row["speed_batched"] = speed["b1"], speed["batched"]
    row["fps_b1"], row["fps_batched"] = speed["b1"]["median"], speed["batched"]["median"]
    log.info("%s: %.1f fps b1, %.1f fps b%d, %.2f MB, dev WER %.2f", name, row["fps_b1"], row["fps_batched"],
             batch, row["size_mb"], row["dev"]["wer"])
    return row


def evaluate_py_wer(model, vocab, data_cfg, protocol: str) -> float:
    """PyTorch fp32 dev WER through cslr.eval.evaluate's batched path (the project's evaluation)."""
    acc = make_accelerator(cpu=True)
    hyps, refs = decode_split(acc, model, vocab, data_cfg, "dev", protocol, BEAM)
    return score(hyps, refs, protocol=protocol).wer


# ------------------------------------------------------------------------------------------------ report


def summarize_rows(rows: dict) -> dict:
    """Headline: the fastest batch-1 variant among those within TARGET_WER points of PyTorch fp32's dev WER."""
    ref = rows["pytorch_fp32"]
    ok = {n: r for n, r in rows.items() if r["fps_b1"] is not None and r["dev"] is not None
          and r["dev"]["wer"] - ref["dev"]["wer"] <= TARGET_WER}
    best = max(ok, key=lambda n: ok[n]["fps_b1"])
    return {"best_fps": ok[best]["fps_b1"], "best_runtime": best, "best_size_mb": ok[best]["size_mb"],
            "best_wer_delta": ok[best]["dev"]["wer"] - ref["dev"]["wer"], "fp32_fps": ref["fps_b1"]}


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rows: dict, summary: dict, settings: dict) -> str:
    ref_wer = rows["pytorch_fp32"]["dev"]["wer"]
    s = settings
    lines = [
        "## student", "",
        f"Checkpoint `{s['checkpoint']}` ({s['model_name']}, {s['modality']}). Speed: {s['cpu']}, {s['threads']} CPU "
        f"threads, synthetic frames at {SPEED_SIZE}x{SPEED_SIZE}, batch 1 = one clip of {s['frames']} frames, batched "
        f"= {s['batch']} clips; median of {s['repeats']} calls after {s['warmup']} warm-up (min-max in bench.json). "
        f"Dev WER: {s['dev_clips']} dev clips of {s['data']}, each alone at the checkpoint's training size "
        f"{s['wer_image_size']}x{s['wer_image_size']} (the model was trained there), {DECODE} decoding, PHOENIX "
        f"scoring; launch/evaluate.py's batched path gives {s['evaluate_py_wer']:.2f} for PyTorch fp32. Size: the "
        f"file on disk (PyTorch: the fp32 state dict saved with torch.save; the checkpoint is "
        f"{s['checkpoint_mb']:.2f} MB).", "",
        f"| variant | fps b1 | fps b{s['batch']} | MB | dev WER | delta | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for n, r in rows.items():
        wer = r["dev"]["wer"] if r["dev"] else None
        note = r["note"] if not r["error"] else f"failed: {r['error']}"
        lines.append(f"| {n} | {_f(r['fps_b1'], '.1f')} | {_f(r['fps_batched'], '.1f')} | {_f(r['size_mb'], '.2f')} "
                     f"| {_f(wer, '.2f')} | {_f(None if wer is None else wer - ref_wer, '+.2f')} | {note} |")
    b = summary
    fps_ok, mb_ok, wer_ok = b["best_fps"] >= TARGET_FPS, b["best_size_mb"] <= TARGET_MB, b["best_wer_delta"] <= TARGET_WER
    small = min((r for r in rows.values() if r["size_mb"] and r["dev"] and r["dev"]["wer"] - ref_wer <= TARGET_WER),
                key=lambda r: r["size_mb"])
    lines += [
        "",
        f"Best runtime (fastest batch 1 within {TARGET_WER:g} WER point of fp32): **{b['best_runtime']}**, "
        f"{b['best_fps']:.1f} frames/s ({b['best_fps'] / b['fp32_fps']:.2f}x eager fp32's {b['fp32_fps']:.1f}), "
        f"{b['best_size_mb']:.2f} MB, dev WER delta {b['best_wer_delta']:+.2f}.",
        f"- >= {TARGET_FPS:g} frames/s at {SPEED_SIZE} on {s['threads']} threads: "
        + ("met." if fps_ok else f"not met ({b['best_fps']:.1f}): the per-frame MobileNetV3 at {SPEED_SIZE}x{SPEED_SIZE}"
           f" costs {1000 / b['best_fps']:.1f} ms a frame on this CPU even in the best runtime; the model was trained at "
           f"{s['wer_image_size']}x{s['wer_image_size']}, where it runs far faster."),
        f"- <= {TARGET_MB:g} MB on disk: " + ("met" if mb_ok else "not met")
        + f" by the best runtime ({b['best_size_mb']:.2f} MB); smallest within the WER bound: {small['name']} "
        f"({small['size_mb']:.2f} MB).",
        f"- dev WER within {TARGET_WER:g} point of fp32 PyTorch: " + ("met" if wer_ok else "not met")
        + f" ({b['best_wer_delta']:+.2f}); int8 deltas: "
        + ", ".join(f"{n} {r['dev']['wer'] - ref_wer:+.2f}" for n, r in rows.items() if "int8" in n and r["dev"])
        + (" (the quick run's student is untrained: its WER says nothing)." if s["quick"] else "."),
    ]
    return "\n".join(lines) + "\n"


def plot(rows: dict, path: Path, batch: int) -> None:
    """Frames/s (batch 1 and batched) and size on disk per variant, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    x = np.arange(len(names))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, (key, label) in enumerate((("fps_b1", "batch 1"), ("fps_batched", f"batch {batch}"))):
        vals = [rows[n][key] or 0 for n in names]
        bars = a1.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=label)
        a1.bar_label(bars, labels=[_f(rows[n][key], ".0f") for n in names], fontsize=7)
    a1.axhline(TARGET_FPS, color="k", ls="--", lw=0.8, label=f"target {TARGET_FPS:g}")
    a1.set(ylabel=f"frames/s at {SPEED_SIZE}x{SPEED_SIZE}", title="inference speed (CPU)")
    bars = a2.bar(x, [rows[n]["size_mb"] or 0 for n in names], 0.6, color="tab:green")
    a2.bar_label(bars, labels=[_f(rows[n]["size_mb"], ".2f") for n in names], fontsize=7)
    a2.axhline(TARGET_MB, color="k", ls="--", lw=0.8, label=f"target {TARGET_MB:g} MB")
    a2.set(ylabel="MB on disk", title="model size")
    for ax in (a1, a2):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ suite


def run(ctx: BenchContext) -> SuiteResult:
    """Every variant's speed, size and dev WER; summary keys best_fps, best_runtime, best_size_mb,
    best_wer_delta, fp32_fps."""
    checkpoint = student_checkpoint(ctx)
    model, vocab, ck, data_cfg, manifest = load_for_eval(checkpoint, "", 8, 0, splits=("dev",))
    model.eval()
    protocol = manifest.get("protocol", "phoenix2014")
    names = LogProbs(model).inputs
    frames, batch = (8, 2) if ctx.quick else (FRAMES, BATCH)
    clips = load_clips(data_cfg, vocab, "dev")
    calib = load_clips(data_cfg, vocab, "train", limit=4 if ctx.quick else CALIB_CLIPS)
    variants = build_variants(model, names, ctx, calib, ctx.work / "student-variants" / Path(checkpoint).parent.name)
    rows = {n: measure_variant(n, v, names, ctx, clips, vocab, protocol, frames, batch) for n, v in variants.items()}
    if rows["pytorch_fp32"]["dev"] is None:
        raise RuntimeError(f"student suite: eager PyTorch failed on {checkpoint}: {rows['pytorch_fp32']['error']}")
    summary = summarize_rows(rows)
    settings = {
        "checkpoint": str(checkpoint), "checkpoint_mb": mb(Path(checkpoint)), "model_name": ck["model_name"],
        "modality": model.cfg.modality, "data": str(data_cfg.data), "dev_clips": len(clips),
        "wer_image_size": int(data_cfg.image_size), "speed_image_size": SPEED_SIZE, "frames": frames,
        "batch": batch, "threads": ctx.threads, "repeats": ctx.repeats, "warmup": ctx.warmup, "decoding": DECODE,
        "calibration_clips": len(calib), "quick": ctx.quick, **cpu_info(),
        "evaluate_py_wer": evaluate_py_wer(model, vocab, data_cfg, protocol),
    }
    figures = {"settings": settings, "variants": {n: {k: v for k, v in r.items() if k != "name"} for n, r in rows.items()}}
    plot(rows, ctx.out / "student.png", batch)
    return SuiteResult(summary=summary, figures=figures, markdown=markdown(rows, summary, settings),
                       plots=["student.png"])
