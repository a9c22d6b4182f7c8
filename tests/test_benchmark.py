"""launch/benchmark.py, the train suite, bench.json/bench.md assembly and the timing helpers.

The suites run at test sizes (--quick): the figures are meaningless there, so the tests check what must hold
whatever the machine: the keys, the units (frames/s = samples/s x frames per sample), the bounds, the files.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, check_ok, run_cmd

from cslr.bench import report, timing

BENCH = str(REPO / "launch" / "benchmark.py")


@pytest.fixture(scope="module")
def train_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # an earlier run's section of another suite must survive a run of only `train`
    (out / "bench.json").write_text(json.dumps({"loader": {"speedup_vs_png": 7.0, "markdown": "## loader\n\nkept\n",
                                                           "plots": [], "error": None}}))
    proc = run_cmd([sys.executable, BENCH, "--suite", "train", "--quick", "--repeats", "2", "--out", str(out),
                    "--work", str(out / "work")], timeout=900)
    check_ok(proc)
    return out, json.loads((out / "bench.json").read_text()), proc


def test_train_suite_figures_are_consistent(train_bench):
    out, bench, proc = train_bench
    sec = bench["train"]
    assert sec["error"] is None
    rows = sec["figures"]["steps"]
    assert {(r["model"], r["precision"]) for r in rows} == {(m, p) for m in ("teacher_tiny", "student_tiny")
                                                           for p in ("fp32", "bf16")}
    for r in rows:
        assert "error" not in r, r
        assert r["step_ms"]["n"] == 2 and r["step_ms"]["min"] <= r["step_ms"]["median"] <= r["step_ms"]["max"]
        # the same timed steps give both rates: frames/s = samples/s x (frames / samples) of the batch
        ratio = r["frames_per_batch"] / r["batch_size"]
        assert r["frames_per_s"]["median"] == pytest.approx(r["samples_per_s"]["median"] * ratio, rel=1e-9)
        assert r["samples_per_s"]["max"] == pytest.approx(1000 * r["batch_size"] / r["step_ms"]["min"], rel=1e-9)
        assert r["peak_memory_mb"] > 0 and r["num_parameters"] > 0
    for role in ("teacher", "student"):
        w = sec["figures"]["data_wait"][role]
        assert 0.0 <= w["data_wait_fraction"] <= 1.0 and w["steps"] == 4
    assert sec["data_wait_fraction"] == sec["figures"]["data_wait"]["teacher"]["data_wait_fraction"]
    assert (out / "train.png").stat().st_size > 0


def test_bench_files_keep_other_suites_and_name_the_targets(train_bench):
    out, bench, proc = train_bench
    assert bench["loader"]["speedup_vs_png"] == 7.0  # kept from the earlier run
    assert bench["settings"]["cpu_count"] >= 1 and "cpu" in bench["settings"]
    md = (out / "bench.md").read_text()
    assert "## Targets" in md and "## train" in md and "kept" in md and "![train](train.png)" in md
    assert "| loader.speedup_vs_png | 7 | >= 5 | met |" in md
    assert "train.data_wait_fraction" in proc.stdout  # the headline table is printed


def test_unknown_suite_is_refused(tmp_path):
    proc = run_cmd([sys.executable, BENCH, "--suite", "train,gpu", "--out", str(tmp_path)], timeout=120)
    assert proc.returncode == 2 and "unknown ['gpu']" in proc.stderr


def test_targets_and_headline():
    t = {x.key: x for x in report.TARGETS}
    assert t["loader.speedup_vs_png"].met(5.0) and not t["loader.speedup_vs_png"].met(4.99)
    assert t["train.data_wait_fraction"].met(0.01) and not t["train.data_wait_fraction"].met(0.2)
    assert t["student.best_wer_delta"].met(-0.9) and not t["student.best_wer_delta"].met(1.5)
    assert t["softtargets.topk_wer_delta"].met(None) is None
    rows = report.headline({"student": {"best_fps": 250.0, "best_size_mb": 3.2}})
    assert ("student.best_fps", "250", ">= 300", "NOT met") in rows
    assert ("student.best_wer_delta", "n/a", "abs<= 1", "n/a") in rows
    assert all(not k.startswith("loader") for k, *_ in rows)  # only the suites present


def test_time_calls_counts_calls_and_summarize():
    calls = []
    seconds = timing.time_calls(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(seconds) == 4 and all(s >= 0 for s in seconds)
    s = timing.summarize([3.0, 1.0, 2.0, 10.0])
    assert s == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    r = timing.rate(10, [2.0, 5.0, 1.0])
    assert (r["median"], r["min"], r["max"]) == (5.0, 2.0, 10.0)
    with pytest.raises(ValueError):
        timing.time_calls(lambda: None, repeats=0)


def test_cpu_threads_restores_the_setting():
    before = torch.get_num_threads()
    with timing.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_peak_memory_window_sees_an_allocation():
    timing.reset_peak_memory()
    base = timing.current_memory_mb()
    block = np.ones(200_000_000 // 8)  # 200 MB, touched
    peak = timing.peak_memory_mb()
    del block
    assert peak >= base + 180, (base, peak)
    timing.reset_peak_memory()
    assert timing.peak_memory_mb() < peak - 150  # the next window starts from what is in use now
