"""Compare trained models (a teacher and its students): WER, size and inference speed, side by side.

    python launch/compare.py --teacher runs/teacher/best_model.pth --student runs/student/best_model.pth --data DIR
    python launch/compare.py --model big=T.pth --model small=S.pth --model conv=S2.pth --out compare/

Per model: dev and test WER (beam search, `--beam`, through cslr.eval.evaluate), number of parameters,
checkpoint size on disk and fp32 weights size (MB = 1e6 bytes), and throughput in frames/s on synthetic uint8
frames (plus landmarks for pose models) of `--image_size`:
  - CPU with `--threads` threads (default 2): batch 1 "streaming" (one clip of `--frames` frames) = `cpu_fps`,
    and `--batch` clips at once = `cpu_fps_batched`;
  - ONNX Runtime on CPU, batch 1 (cslr.models.export's export and session; a model that does not export records
    the reason in `onnx_error`);
  - GPU in bf16 autocast, batch 1 and batched, when a GPU is present (else null).
Each speed is the median of `--repeats` timed runs after a warm-up, with the min and max (`*_min`, `*_max`).

Writes <out>/compare.json ({"models": {name: {...}}, "settings": {...}, "ratios": {...}}), compare.md (a table)
and compare.png (bar plots of WER, size and speed). Ratios compare each student with the teacher (`--teacher`,
else the first model): speedups and size ratios (student / teacher) and WER deltas (student - teacher, points).

The command-line door is launch/compare.py; tests: `pytest tests/test_compare.py -q`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from cslr.bench.context import cpu_info
from cslr.bench.timing import cpu_threads, fps_stats
from cslr.eval.evaluate import decode_split, load_for_eval
from cslr.eval.lm import lm_from_args
from cslr.eval.wer import score
from cslr.io import atomic_write_json, save_figure
from cslr.models import export
from cslr.trainer.runtime import make_accelerator

@dataclass
class Entry:
    """One model to compare: its row name, checkpoint and role ("teacher", "student" or "model")."""

    name: str
    path: Path
    role: str


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------ the models


def parse_entries(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Entry]:
    """--teacher / --student / --model NAME=PATH -> entries (names filled in later from the checkpoints)."""
    entries = [Entry("", Path(p), "teacher") for p in args.teacher]
    entries += [Entry("", Path(p), "student") for p in args.student]
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model {spec!r}: expected NAME=PATH")
        entries.append(Entry(name, Path(path), "model"))
    if not entries:
        parser.error("give at least one model: --teacher T.pth, --student S.pth or --model NAME=PATH")
    return entries


def default_name(model_name: str, path: Path) -> str:
    """`student_small@run_dir`: the architecture and the folder of the checkpoint."""
    return f"{model_name}@{path.resolve().parent.name}"


def unique_names(entries: list[Entry]) -> None:
    """Suffix repeated names with -2, -3, ... so that every model keeps its own row."""
    seen: dict[str, int] = {}
    for e in entries:
        n = seen.get(e.name, 0) + 1
        seen[e.name] = n
        if n > 1:
            e.name = f"{e.name}-{n}"


def weights_mb(model: torch.nn.Module) -> float:
    """Size of the state dict with every floating tensor in fp32 (parameters and buffers), in MB."""
    total = 0
    for t in model.state_dict().values():
        total += t.numel() * (4 if t.is_floating_point() else t.element_size())
    return total / 1e6


# ------------------------------------------------------------------------------------------------ timing


def torch_fps(model, names: tuple, inputs: tuple, repeats: int, device: str = "cpu", bf16: bool = False) -> dict:
    """Frames/s of the model's forward on whole clips `inputs`, the tensors of the model inputs `names`."""
    B, T = inputs[0].shape[:2]
    inputs = tuple(x.to(device) for x in inputs)
    lengths = torch.full((B,), T, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None

    def run():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            model(**dict(zip(names, inputs)), lengths=lengths)

    return fps_stats(run, B * T, repeats, sync=sync)


def onnx_fps(model, path: Path, inputs: tuple, threads: int, image_size: int, frames: int, repeats: int) -> dict:
    """Export `model` to `path` and time ONNX Runtime on the batch-1 clip `inputs` -> fps stats + file size."""
    export.export_onnx(model, path, image_size, frames)
    session = export.onnx_session(path, threads=threads)
    arrays = tuple(x.numpy() for x in inputs)
    stats = fps_stats(lambda: export.run_onnx(session, *arrays), inputs[0].shape[1], repeats)
    return {**stats, "onnx_mb": path.stat().st_size / 1e6}


def measure_speed(model, row: dict, args, onnx_dir: Path) -> None:
    """CPU (PyTorch batch 1 and batched, ONNX Runtime batch 1) and GPU throughput into `row`."""
    names = export.LogProbs(model).inputs
    clip = export.example_inputs(names, 1, args.frames, args.image_size)               # (1, T, 3, S, S) ...
    batch = export.example_inputs(names, args.batch, args.frames, args.image_size)     # (B, T, 3, S, S) ...
    model.to("cpu")
    with cpu_threads(args.threads):
        put(row, "cpu_fps", torch_fps(model, names, clip, args.repeats))
        log(f"  cpu  batch 1: {row['cpu_fps']:.1f} frames/s")
        put(row, "cpu_fps_batched", torch_fps(model, names, batch, args.repeats))
        log(f"  cpu  batch {args.batch}: {row['cpu_fps_batched']:.1f} frames/s")
        row["onnx_cpu_fps"] = row["onnx_error"] = None
        if not args.no_onnx:
            try:
                row["onnx_path"] = str(onnx_dir / f"{safe(row['name'])}.onnx")
                stats = onnx_fps(model, Path(row["onnx_path"]), clip, args.threads, args.image_size, args.frames,
                                 args.repeats)
                row["onnx_mb"] = stats.pop("onnx_mb")
                put(row, "onnx_cpu_fps", stats)
                log(f"  onnx batch 1: {row['onnx_cpu_fps']:.1f} frames/s")
            except Exception as e:  # noqa: BLE001  any exporter/runtime failure is a finding, not a crash
                row["onnx_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log(f"  onnx: failed ({row['onnx_error']})")
        else:
            row["onnx_error"] = "skipped (--no_onnx)"
    row["gpu_fps"] = row["gpu_fps_batched"] = None
    if torch.cuda.is_available():
        model.to("cuda")
        put(row, "gpu_fps", torch_fps(model, names, clip, args.repeats, "cuda", bf16=True))
        put(row, "gpu_fps_batched", torch_fps(model, names, batch, args.repeats, "cuda", bf16=True))
        log(f"  gpu  batch 1: {row['gpu_fps']:.1f}, batch {args.batch}: {row['gpu_fps_batched']:.1f} frames/s (bf16)")
        model.to("cpu")


def put(row: dict, key: str, stats: dict) -> None:
    """fps stats -> row[key], row[key_min], row[key_max]."""
    row[key], row[f"{key}_min"], row[f"{key}_max"] = stats["fps"], stats["fps_min"], stats["fps_max"]


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ------------------------------------------------------------------------------------------------ WER


def measure_wer(acc, loaded: tuple, row: dict, args, fusion: tuple = (None, 0.0, 0.0)) -> None:
    """dev_wer / test_wer of the model in `row` (null with a note when its data has no such split); `fusion`:
    (LM, lm_weight, word_bonus) of `--lm`, the same for every model."""
    model, vocab, ck, data_cfg, manifest = loaded
    lm, lm_weight, word_bonus = fusion
    protocol = args.protocol or manifest.get("protocol", "phoenix2014")
    row["protocol"] = protocol
    model.to(acc.device)
    for split in ("dev", "test"):
        if split not in manifest["splits"]:
            row[f"{split}_wer"] = None
            row.setdefault("notes", []).append(f"{data_cfg.data}: no {split} split")
            log(f"  {split}: no such split in {data_cfg.data}")
            continue
        hyps, refs = decode_split(acc, model, vocab, data_cfg, split, protocol, args.beam,
                                  desc=f"{row['name']} {split}", lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
        row[f"{split}_wer"] = score(hyps, refs, protocol=protocol).wer
        log(f"  {split} WER {row[f'{split}_wer']:.2f}% ({len(hyps)} videos, beam {args.beam})")
    model.to("cpu")


# ------------------------------------------------------------------------------------------------ outputs


def ratios(rows: dict, reference: str) -> dict:
    """Each other model against `reference`: speed and size ratios (model / reference), WER deltas (points)."""
    ref = rows[reference]

    def ratio(a, b):
        return a / b if a is not None and b else None

    def delta(a, b):
        return a - b if a is not None and b is not None else None

    out = {}
    for name, r in rows.items():
        if name == reference:
            continue
        out[f"{name} vs {reference}"] = {
            "cpu_speedup": ratio(r["cpu_fps"], ref["cpu_fps"]),
            "cpu_batched_speedup": ratio(r["cpu_fps_batched"], ref["cpu_fps_batched"]),
            "onnx_cpu_speedup": ratio(r["onnx_cpu_fps"], ref["onnx_cpu_fps"]),
            "gpu_speedup": ratio(r["gpu_fps"], ref["gpu_fps"]),
            "gpu_batched_speedup": ratio(r["gpu_fps_batched"], ref["gpu_fps_batched"]),
            "size_ratio": ratio(r["size_mb"], ref["size_mb"]),
            "parameter_ratio": ratio(r["num_parameters"], ref["num_parameters"]),
            "dev_wer_delta": delta(r["dev_wer"], ref["dev_wer"]),
            "test_wer_delta": delta(r["test_wer"], ref["test_wer"]),
        }
    return out


def _f(x, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _x(x) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def _fps(r: dict, key: str) -> str:
    if r.get(key) is None:
        return "n/a"
    return f"{r[key]:.1f} ({r[key + '_min']:.1f}-{r[key + '_max']:.1f})"


def markdown(result: dict) -> str:
    """compare.md: one row per model, then the ratios and the settings."""
    s = result["settings"]
    lines = [
        "# Model comparison", "",
        f"WER: beam {s['beam']}. Speed in frames/s, median (min-max) of {s['repeats']} runs, {s['image_size']}x"
        f"{s['image_size']} frames, clips of {s['frames']} frames; CPU with {s['threads']} thread(s) "
        f"({s['cpu']}); GPU: {s['gpu'] or 'none'} (bf16).", "",
        f"| model | role | parameters (M) | checkpoint MB | fp32 weights MB | dev WER % | test WER % | "
        f"CPU fps, batch 1 | CPU fps, batch {s['batch']} | ONNX CPU fps, batch 1 | GPU fps, batch 1 | "
        f"GPU fps, batch {s['batch']} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["models"].items():
        onnx = _fps(r, "onnx_cpu_fps") if r["onnx_error"] is None else "failed"
        lines.append(f"| {name} | {r['role']} | {r['num_parameters'] / 1e6:.3f} | {r['size_mb']:.2f} | "
                     f"{r['weights_mb']:.2f} | {_f(r['dev_wer'], '.2f')} | {_f(r['test_wer'], '.2f')} | "
                     f"{_fps(r, 'cpu_fps')} | {_fps(r, 'cpu_fps_batched')} | {onnx} | {_fps(r, 'gpu_fps')} | "
                     f"{_fps(r, 'gpu_fps_batched')} |")
    failed = [(n, r["onnx_error"]) for n, r in result["models"].items() if r["onnx_error"]]
    if failed:
        lines += ["", "ONNX not measured:", *[f"- {n}: {e}" for n, e in failed]]
    if result["ratios"]:
        lines += ["", "| comparison | CPU speedup (b1) | CPU speedup (batched) | ONNX speedup | GPU speedup | "
                      "size ratio | parameter ratio | dev WER delta | test WER delta |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in result["ratios"].items():
            lines.append(f"| {k} | {_x(v['cpu_speedup'])} | {_x(v['cpu_batched_speedup'])} | "
                         f"{_x(v['onnx_cpu_speedup'])} | {_x(v['gpu_speedup'])} | "
                         f"{_f(v['size_ratio'], '.3f')} | {_f(v['parameter_ratio'], '.3f')} | "
                         f"{_f(v['dev_wer_delta'], '+.2f')} | {_f(v['test_wer_delta'], '+.2f')} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """compare.png: WER (dev, test), size (checkpoint, fp32 weights) and speed bars per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(result["models"])
    rows = [result["models"][n] for n in names]
    b = result["settings"]["batch"]
    panels = [
        ("WER (%)", "WER (lower is better)", [("dev", "dev_wer"), ("test", "test_wer")], False),
        ("MB", "Size", [("checkpoint", "size_mb"), ("fp32 weights", "weights_mb")], False),
        ("frames/s", "Throughput (higher is better)",
         [("CPU b1", "cpu_fps"), (f"CPU b{b}", "cpu_fps_batched"), ("ONNX CPU b1", "onnx_cpu_fps"),
          ("GPU b1", "gpu_fps"), (f"GPU b{b}", "gpu_fps_batched")], True),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    x = np.arange(len(names))
    for ax, (ylabel, title, series, log_scale) in zip(axes, panels):
        series = [(lab, key) for lab, key in series if any(r.get(key) is not None for r in rows)]
        width = 0.8 / max(len(series), 1)
        for i, (label, key) in enumerate(series):
            vals = [r.get(key) for r in rows]
            bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, [v or 0 for v in vals], width, label=label)
            ax.bar_label(bars, labels=[_f(v, ".3g") for v in vals], fontsize=7)
        ax.set(ylabel=ylabel, title=title, xticks=x)
        ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def settings(args, acc, fusion: tuple = (None, 0.0, 0.0)) -> dict:
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"beam": args.beam, "lm": args.lm or None, "lm_weight": fusion[1], "word_bonus": fusion[2],
            "threads": args.threads, "image_size": args.image_size, "frames": args.frames,
            "batch": args.batch, "repeats": args.repeats, "warmup": 1, "data": args.data or None,
            "eval_device": str(acc.device), **cpu_info(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "onnxruntime": ort}


def compare(args: argparse.Namespace, entries: list[Entry]) -> int:
    """Every checkpoint and data folder checked before any long work; then WER and speed per model -> the
    outputs in `args.out`. Returns the exit code (2: a checkpoint or data folder is unusable)."""
    loaded = {}
    try:  # every checkpoint and data folder checked before any long work
        for e in entries:
            loaded[id(e)] = load_for_eval(e.path, args.data, args.eval_batch_size, args.num_workers)
            e.name = e.name or default_name(loaded[id(e)][2]["model_name"], e.path)
        fusion = lm_from_args(args)
        if fusion[0] is not None:
            for e in entries:  # the LM must fit every model's vocabulary
                fusion[0].bind(loaded[id(e)][1], args.protocol or loaded[id(e)][4].get("protocol", "phoenix2014"))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unique_names(entries)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator()
    rows = {}
    for i, e in enumerate(entries, 1):
        model, _, ck, data_cfg, _ = loaded[id(e)]
        row = rows[e.name] = {
            "name": e.name, "role": e.role, "checkpoint": str(e.path), "model_name": ck["model_name"],
            "modality": getattr(model.cfg, "modality", None), "data": str(data_cfg.data),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "size_mb": e.path.stat().st_size / 1e6, "weights_mb": weights_mb(model)}
        log(f"[{i}/{len(entries)}] {e.name} ({e.role}, {e.path}): {row['num_parameters'] / 1e6:.3f} M parameters, "
            f"checkpoint {row['size_mb']:.2f} MB, fp32 weights {row['weights_mb']:.2f} MB")
        measure_wer(acc, loaded[id(e)], row, args, fusion)
        measure_speed(model, row, args, out / "onnx")
    reference = next((e.name for e in entries if e.role == "teacher"), entries[0].name)
    result = {"models": rows, "settings": settings(args, acc, fusion), "reference": reference,
              "ratios": ratios(rows, reference)}
    atomic_write_json(out / "compare.json", result)
    (out / "compare.md").write_text(markdown(result))
    plot(result, out / "compare.png")
    log("")
    log(markdown(result))
    log(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0

