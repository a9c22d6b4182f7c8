"""bench.json and bench.md: the suites' results, the headline figures against the targets of issue #6.

bench.json = {"settings": {machine, run settings, date}, "<suite>": {<headline keys>, "figures": {...},
"settings": {...}, "error": null or why it failed}, ...}. A run of some suites into a folder that already holds a
bench.json replaces those suites' sections and keeps the others (each section carries its own settings and date).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cslr.io import atomic_write_json

SUITES = ("loader", "train", "student", "softtargets", "recognize")


@dataclass(frozen=True)
class Target:
    key: str          # "<suite>.<summary key>"
    op: str           # ">=", "<=" or "abs<="
    bound: float
    text: str

    def met(self, value) -> bool | None:
        if value is None:
            return None
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        return abs(value) <= self.bound


TARGETS = (
    Target("loader.speedup_vs_png", ">=", 5.0, "shard loader >= 5x the videos/s of the per-frame PNG Dataset"),
    Target("train.data_wait_fraction", "<=", 0.05, "data wait < 5% of step time, teacher small, 2 workers"),
    Target("student.best_fps", ">=", 300.0, "student >= 300 frames/s at 224x224 on 2 CPU threads"),
    Target("student.best_size_mb", "<=", 10.0, "student <= 10 MB on disk"),
    Target("student.best_wer_delta", "abs<=", 1.0, "student runtime's dev WER within 1 point of fp32 PyTorch"),
    Target("softtargets.topk_size_ratio", ">=", 50.0, "top-K soft targets >= 50x smaller than dense fp32"),
    Target("softtargets.topk_wer_delta", "abs<=", 0.5, "KD student from top-K within 0.5 WER points of dense fp32"),
    Target("recognize.rgb_fps", ">=", 75.0, "RGB-only student, video file to glosses, >= 75 frames/s on 2 threads"),
    Target("recognize.stream_latency_s", "<=", 1.5, "streaming: a gloss printed within 1.5 s of its last frame"),
)


def bound(key: str) -> float:
    """The bound of the target on `key` ("<suite>.<summary key>"): the suites' own sentences read it here."""
    for t in TARGETS:
        if t.key == key:
            return t.bound
    raise KeyError(f"no benchmark target on {key!r}; the targets: {[t.key for t in TARGETS]}")


def lookup(bench: dict, key: str):
    suite, name = key.split(".", 1)
    return (bench.get(suite) or {}).get(name)


def load_existing(path: Path) -> dict:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); move it away or choose another --out") from e
    return {}


def section(result, ctx, seconds: float, error: str | None = None) -> dict:
    """A suite's bench.json section: headline keys at the top, then everything measured."""
    sec = dict(result.summary) if result else {}
    sec.update(figures=result.figures if result else {}, markdown=result.markdown if result else "",
               plots=result.plots if result else [], error=error, seconds=seconds,
               settings={**ctx.describe(), "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    return sec


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def headline(bench: dict) -> list[tuple[str, str, str, str]]:
    """(key, value, target, met) rows for the targets of the suites present."""
    rows = []
    for t in TARGETS:
        if t.key.split(".")[0] not in bench:
            continue
        value = lookup(bench, t.key)
        met = t.met(value)
        rows.append((t.key, _fmt(value), f"{t.op} {t.bound:g}", {True: "met", False: "NOT met", None: "n/a"}[met]))
    return rows


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(bench: dict) -> str:
    s = bench.get("settings", {})
    gpu = s.get("gpu") or "none"
    parts = ["# cslr benchmarks", "",
             f"Machine: CPU {s.get('cpu')} ({s.get('cpu_count')} cores), GPU {gpu}; torch {s.get('torch')}. "
             f"Each figure: median (min-max) of the repeats after a warm-up; every ratio is measured in one run. "
             f"Reproduce: `python launch/benchmark.py` (see README, Performance).", "",
             "## Targets", "", table(headline(bench), ("figure", "value", "target", "status")), ""]
    for suite in SUITES:
        sec = bench.get(suite)
        if not sec:
            continue
        if sec.get("error"):
            parts += [f"## {suite}", "", f"Failed: {sec['error']}", ""]
        else:
            parts += [sec.get("markdown", "").rstrip(), ""]
            parts += [f"![{suite}]({p})" for p in sec.get("plots", [])] + [""]
    return "\n".join(parts)


def write(out: Path, bench: dict) -> None:
    atomic_write_json(out / "bench.json", bench)
    tmp = out / "bench.md.tmp"
    tmp.write_text(markdown(bench))
    tmp.replace(out / "bench.md")
