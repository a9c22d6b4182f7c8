"""Timing helpers shared by the benchmarks and launch/compare.py: every figure is the median of `repeats` timed
calls after `warmup` untimed ones, reported with its min and max (these machines are shared and noisy).

Tests: `/work/venv/bin/pytest tests/test_benchmark.py -q`
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from typing import Callable

import torch


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run the block with `n` intra-op threads (0 = leave as is), then restore the previous setting."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def summarize(values: list[float]) -> dict:
    """{"median", "min", "max", "n"} of a list of measurements."""
    if not values:
        raise ValueError("summarize: no measurements")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None) -> list[float]:
    """Call `fn` `warmup` times untimed, then `repeats` times timed -> seconds per call (sync after each, for CUDA)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        seconds.append(time.perf_counter() - t0)
    return seconds


def rate(count: float, seconds: list[float]) -> dict:
    """Throughput stats of `count` items per timed call: {"median", "min", "max", "n"} in items/s."""
    return summarize([count / s for s in seconds])


def fps_stats(fn: Callable[[], object], frames: int, repeats: int, warmup: int = 1, sync=None) -> dict:
    """Frames/s of `fn` (which processes `frames` frames): {"fps": median, "fps_min", "fps_max"}."""
    r = rate(frames, time_calls(fn, repeats, warmup, sync))
    return {"fps": r["median"], "fps_min": r["min"], "fps_max": r["max"]}


def reset_peak_memory() -> None:
    """Start a new peak-memory window: CUDA's allocator peak, and on Linux the process's peak RSS (VmHWM, reset by
    writing 5 to /proc/self/clear_refs; elsewhere the RSS peak stays the process's lifetime peak)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def current_memory_mb(device: str = "cpu") -> float:
    """Memory in use now, MB: CUDA allocated bytes on "cuda", else the process's resident set (VmRSS; Linux)."""
    if device == "cuda":
        return torch.cuda.memory_allocated() / 1e6
    rss = _proc_status_mb("VmRSS")
    return float("nan") if rss is None else rss


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (kB there), in MB; None where there is no such file (not Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    return None


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory since `reset_peak_memory`, MB (1e6 bytes): CUDA allocated bytes on "cuda", else the process's
    peak resident set (VmHWM on Linux; ru_maxrss elsewhere, KiB on Linux and bytes on macOS)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e6
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e6
