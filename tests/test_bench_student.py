"""The student benchmark suite (cslr/bench/student.py) on an untrained tiny student and the tiny corpus: int8 ONNX
Runtime close to fp32, the ONNX Runtime dev-WER path scoring as the PyTorch paths (batch-1 clips and
launch/evaluate.py's batched loader), sizes equal to the files on disk, and a quick run's summary and plot.

Run: `/work/venv/bin/pytest tests/test_bench_student.py -q`
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save_untrained

pytest.importorskip("onnxruntime")
from cslr.bench import student as S  # noqa: E402
from cslr.bench.context import BenchContext  # noqa: E402
from cslr.models.export import LogProbs  # noqa: E402
from cslr.eval.decode import greedy_decode  # noqa: E402
from cslr.eval.evaluate import load_for_eval  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny_data, tmp_path_factory):
    """A tiny untrained student with trained-looking norms, its dev and calibration clips, and its variants."""
    ckpt = save_untrained(tiny_data, tmp_path_factory.mktemp("stu"), "student_tiny", "rgb", randomise=True)
    model, vocab, ck, data_cfg, manifest = load_for_eval(ckpt, "", 4, 0, splits=("dev",))
    names = LogProbs(model.eval()).inputs
    clips = S.load_clips(data_cfg, vocab, "dev")
    calib = S.load_clips(data_cfg, vocab, "train", limit=4)
    ctx = BenchContext(out=tmp_path_factory.mktemp("out"), work=tmp_path_factory.mktemp("work"), repeats=1, quick=True,
                       threads=1, student=str(ckpt))
    variants = S.build_variants(model, names, ctx, calib, ctx.work / "v")
    return {"ckpt": ckpt, "model": model, "vocab": vocab, "data_cfg": data_cfg, "names": names, "clips": clips,
            "variants": variants, "ctx": ctx, "protocol": manifest.get("protocol", "phoenix2014")}


def test_int8_onnx_runtime_is_close_to_fp32(setup):
    v, names = setup["variants"], setup["names"]
    fp32 = v["onnx_fp32"]["run"]
    for name in ("onnx_int8_static", "onnx_int8_dynamic"):
        assert v[name]["run"] is not None, v[name].get("error")
        same = total = 0
        for clip in setup["clips"]:
            ref, got = fp32(*(clip[n] for n in names)), v[name]["run"](*(clip[n] for n in names))  # (1, T', V)
            assert got.shape == ref.shape
            spread = float(ref.max() - ref.min())
            assert np.abs(got - ref).max() <= 0.25 * spread, (name, np.abs(got - ref).max(), spread)
            lens = torch.tensor([ref.shape[1]])
            same += greedy_decode(torch.from_numpy(ref), lens) == greedy_decode(torch.from_numpy(got), lens)
            total += 1
        assert same >= 0.5 * total, (name, same, total)
    # int8 conv weights: a smaller file (not 4x here: the tiny student's LSTM, fp32 in the static graph, dominates)
    assert S.mb(v["onnx_int8_static"]["file"]) < 0.9 * S.mb(v["onnx_fp32"]["file"])


def test_onnx_dev_wer_equals_the_pytorch_paths(setup):
    s = setup
    wer = {name: S.clip_wer(s["variants"][name]["run"], s["names"], s["clips"], s["vocab"], s["protocol"])
           for name in ("pytorch_fp32", "onnx_fp32")}
    assert wer["onnx_fp32"] == wer["pytorch_fp32"]
    assert wer["pytorch_fp32"]["num_ref_words"] > 0 and len(s["clips"]) == 8  # the tiny preset's dev split, all of it
    # the project's batched, padded evaluation (launch/evaluate.py) scores the same as clips run one at a time
    assert S.evaluate_py_wer(s["model"], s["vocab"], s["data_cfg"], s["protocol"]) == pytest.approx(wer["pytorch_fp32"]["wer"])


def test_quick_run_summary_sizes_and_plot(setup):
    ctx = setup["ctx"]
    result = S.run(ctx)
    assert set(result.summary) == {"best_fps", "best_runtime", "best_size_mb", "best_wer_delta", "fp32_fps"}
    rows = result.figures["variants"]
    assert set(rows) == set(setup["variants"])
    for name, r in rows.items():
        assert (r["fps_b1"] is None) == (r["dev"] is None) and (r["fps_b1"] is not None or r["error"]), (name, r)
        if r["fps_b1"] is not None:
            assert 0 < r["speed_b1"]["min"] <= r["fps_b1"] <= r["speed_b1"]["max"]
    # sizes are the files on disk: the saved fp32 state dict for PyTorch, the .onnx graphs
    folder = ctx.work / "student-variants" / setup["ckpt"].parent.name
    assert rows["pytorch_fp32"]["size_mb"] == (folder / "student_fp32_state_dict.pt").stat().st_size / 1e6
    for name in ("onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic"):
        assert rows[name]["size_mb"] == (folder / f"student_{name[5:]}.onnx").stat().st_size / 1e6
    best = rows[result.summary["best_runtime"]]
    assert result.summary["best_fps"] == max(r["fps_b1"] for r in rows.values() if r["dev"] is not None
                                             and r["dev"]["wer"] - rows["pytorch_fp32"]["dev"]["wer"] <= 1.0)
    assert result.summary["best_size_mb"] == best["size_mb"]
    assert result.summary["best_wer_delta"] == best["dev"]["wer"] - rows["pytorch_fp32"]["dev"]["wer"]
    assert result.summary["fp32_fps"] == rows["pytorch_fp32"]["fps_b1"]
    assert result.figures["settings"]["evaluate_py_wer"] == pytest.approx(rows["pytorch_fp32"]["dev"]["wer"])
    assert result.plots == ["student.png"] and (ctx.out / "student.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = result.markdown
    assert md.startswith("## student") and "| onnx_int8_static |" in md and "300 frames/s" in md and "10 MB" in md
