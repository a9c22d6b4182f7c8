"""launch/gpu_check.py --dry-run: every row of the GPU check runs on the CPU, marked DRY, and the table has them all.

    pytest -q tests/test_gpu_check.py
"""

from __future__ import annotations

import json
import sys

from conftest import REPO, check_ok, run_cmd

ROWS = [("step", f"{m} {p}") for m in ("teacher_tiny", "student_tiny") for p in ("fp32", "bf16", "fp16 + GradScaler")] + [
    ("ctc", "native CTC fp32 vs fp64"), ("jpeg", "decode_jpeg on the CPU"), ("jpeg", "decode_jpeg on CUDA (batched)"),
    ("infer", "student_tiny fp32"), ("infer", "student_tiny fp16"),
    ("accelerate", "accelerate launch, 1 process, tiny recipe")]


def test_dry_run_passes_with_every_row(tmp_path):
    proc = run_cmd([sys.executable, str(REPO / "launch" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                   timeout=900)
    check_ok(proc)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["settings"]["dry_run"]
    assert [(r["check"], r["what"]) for r in report["rows"]] == ROWS
    for r in report["rows"]:
        assert "error" not in r and r["run"].startswith("DRY"), r
    steps = [r for r in report["rows"] if r["check"] == "step"]
    assert all(r["finite"] and r["ms_per_step"]["median"] > 0 and r["peak_memory_mb"] > 0 for r in steps)
    ctc = next(r for r in report["rows"] if r["check"] == "ctc")
    assert ctc["agree"] and not ctc["cudnn_used"]
    launch = report["rows"][-1]
    assert launch["returncode"] == 0 and launch["device"] == "cpu" and launch["results"]["global_steps"] == 2
    assert launch["results"]["test_wer"] is not None  # ran to its end: the best model scored on test
    md = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in md and md.strip() in proc.stdout  # the table printed is the one written
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(ROWS) and all("| DRY (CPU" in line for line in table)
