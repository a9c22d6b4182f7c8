"""The `recognize` benchmark suite at test size (--quick: student_tiny at 32x32, one run per variant): every variant
runs launch/recognize.py end to end and reports its stages; the figures themselves are meaningless here.

Run: `pytest tests/test_bench_recognize.py -q`
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, check_ok, run_cmd

pytest.importorskip("av", reason='PyAV not installed: pip install -e ".[landmarks]"')
pytest.importorskip("onnxruntime")


def test_recognize_suite_quick(tmp_path):
    out = tmp_path / "bench"
    proc = run_cmd([sys.executable, str(REPO / "launch" / "benchmark.py"), "--suite", "recognize", "--quick",
                    "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out), "--work",
                    str(tmp_path / "work")], timeout=900)
    check_ok(proc)
    sec = json.loads((out / "bench.json").read_text())["recognize"]
    assert sec["error"] is None
    rows = sec["figures"]["rows"]
    assert {"rgb pytorch", "rgb onnx_fp32", "rgb onnx_int8", "stream rgb pytorch (32, 8)"} <= set(rows)
    try:
        import mediapipe  # noqa: F401
        pose_ok = True
    except ImportError:
        pose_ok = False
    for name, r in rows.items():
        if "pose" in name and not pose_ok:
            assert "error" in r
            continue
        assert "error" not in r, (name, r)
        assert r["end_to_end_fps"]["median"] > 0 and r["frames"] > 0
        assert (r["ms_per_frame"]["landmarks"]["median"] > 0) == ("pose" in name)
        stage_ms = sum(s["median"] for s in r["ms_per_frame"].values())
        assert stage_ms <= r["total_ms_per_frame"]["median"] * 1.001
    assert sec["rgb_fps"] == max(rows[n]["end_to_end_fps"]["median"] for n in rows if n.startswith("rgb ")
                                 and "pose" not in n)
    assert sec["stream_latency_s"] == rows["stream rgb pytorch (32, 8)"]["latency_max_s"]["median"] > 0
    md = (out / "bench.md").read_text()
    assert "## recognize" in md and "| recognize.rgb_fps |" in md and "| recognize.stream_latency_s |" in md
