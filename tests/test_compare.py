"""launch/compare.py on an untrained tiny teacher (rgb+pose) and student (rgb): compare.json figures against
their sources (launch/evaluate.py's WER, the model's parameter count, the file size), compare.md and compare.png,
and a clear exit 2 on a bad checkpoint.

Run: `/work/venv/bin/pytest tests/test_compare.py -q`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cmd, save_untrained

from cslr.recipes import compare  # noqa: E402

FLAGS = ["--image_size", "32", "--frames", "8", "--repeats", "2", "--batch", "2", "--beam", "2",
         "--num_workers", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def compared(tiny_data, tmp_path_factory):
    """Both checkpoints and one compare.py run over them (data folder taken from the checkpoints)."""
    teacher = save_untrained(tiny_data, tmp_path_factory.mktemp("teacher"), "teacher_tiny", "rgb+pose", randomise=True)
    student = save_untrained(tiny_data, tmp_path_factory.mktemp("student"), "student_tiny", "rgb", randomise=True)
    out = tmp_path_factory.mktemp("compare")
    proc = run_cmd([sys.executable, str(REPO / "launch" / "compare.py"), "--teacher", str(teacher),
                    "--student", str(student), "--out", str(out), *FLAGS], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return teacher, student, out, proc


def evaluate_wer(checkpoint: Path, split: str, tmp_path: Path) -> float:
    proc = run_cmd([sys.executable, str(REPO / "launch" / "evaluate.py"), "--checkpoint", str(checkpoint),
                    "--split", split, "--beam", "2", "--num_workers", "0", "--out", str(tmp_path)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / f"{split}_wer.json").read_text())["wer"]


def test_compare_json_matches_its_sources(compared, tmp_path):
    from cslr.models.checkpoint import model_from_checkpoint

    teacher, student, out, proc = compared
    result = json.loads((out / "compare.json").read_text())
    names = {f"teacher_tiny@{teacher.parent.name}": teacher, f"student_tiny@{student.parent.name}": student}
    assert set(result["models"]) == set(names)
    assert result["settings"]["image_size"] == 32 and result["settings"]["frames"] == 8
    for name, path in names.items():
        r = result["models"][name]
        model, _, _ = model_from_checkpoint(path)
        assert r["num_parameters"] == sum(p.numel() for p in model.parameters())
        assert r["size_mb"] == pytest.approx(path.stat().st_size / 1e6)
        assert r["weights_mb"] == pytest.approx(sum(t.numel() * 4 for t in model.state_dict().values()
                                                    if t.is_floating_point()) / 1e6, rel=1e-2)
        for key in ("cpu_fps", "cpu_fps_batched"):
            assert 0 < r[f"{key}_min"] <= r[key] <= r[f"{key}_max"], (name, key)
        assert r["gpu_fps"] is None and r["gpu_fps_batched"] is None  # this machine has no GPU
        assert (r["onnx_cpu_fps"] is None) != (r["onnx_error"] is None), r  # a speed or a reason, never neither
        assert f"{name} " in proc.stdout and "dev WER" in proc.stdout  # progress
    s = result["models"][f"student_tiny@{student.parent.name}"]
    t = result["models"][f"teacher_tiny@{teacher.parent.name}"]
    assert s["onnx_cpu_fps"] > 0 and Path(s["onnx_path"]).is_file() and s["onnx_mb"] > 0  # the student exports
    # WER from launch/evaluate.py on the same checkpoint, both models, both splits
    assert s["dev_wer"] == pytest.approx(evaluate_wer(student, "dev", tmp_path / "s"))
    assert t["test_wer"] == pytest.approx(evaluate_wer(teacher, "test", tmp_path / "t"))
    ratio = result["ratios"][f"student_tiny@{student.parent.name} vs teacher_tiny@{teacher.parent.name}"]
    assert ratio["size_ratio"] == pytest.approx(s["size_mb"] / t["size_mb"])
    assert ratio["cpu_speedup"] == pytest.approx(s["cpu_fps"] / t["cpu_fps"])
    assert ratio["dev_wer_delta"] == pytest.approx(s["dev_wer"] - t["dev_wer"])


def test_compare_md_and_png(compared):
    _, _, out, _ = compared
    result = json.loads((out / "compare.json").read_text())
    rows = [ln for ln in (out / "compare.md").read_text().splitlines() if ln.startswith("| ")]
    for name, r in result["models"].items():
        (row,) = [ln for ln in rows if ln.startswith(f"| {name} | {r['role']} |")]
        assert f"| {r['size_mb']:.2f} |" in row and f"{r['cpu_fps']:.1f}" in row
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_checkpoint_or_model_flag_exits_2(compared, tmp_path):
    teacher, _, _, _ = compared
    missing = tmp_path / "no.pth"
    proc = run_cmd([sys.executable, str(REPO / "launch" / "compare.py"), "--teacher", str(teacher),
                    "--student", str(missing), "--out", str(tmp_path / "o"), *FLAGS], timeout=120)
    assert proc.returncode == 2 and str(missing) in proc.stderr and "not found" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()  # checked before any work
    bad_flag = run_cmd([sys.executable, str(REPO / "launch" / "compare.py"), "--model", str(teacher)], timeout=120)
    assert bad_flag.returncode == 2 and "NAME=PATH" in bad_flag.stderr


def test_repeated_names_get_suffixes_and_fps_stats_time_every_repeat():
    entries = [compare.Entry("a", Path("x"), "model"), compare.Entry("a", Path("y"), "model"),
               compare.Entry("b", Path("z"), "model")]
    compare.unique_names(entries)
    assert [e.name for e in entries] == ["a", "a-2", "b"]
    calls = []
    stats = compare.fps_stats(lambda: calls.append(1), frames=10, repeats=3, warmup=2)
    assert len(calls) == 5 and 0 < stats["fps_min"] <= stats["fps"] <= stats["fps_max"]
