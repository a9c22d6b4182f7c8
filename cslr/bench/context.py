"""What every benchmark suite gets (`BenchContext`) and returns (`SuiteResult`), and the artefacts they share.

A suite is a module with `run(ctx: BenchContext) -> SuiteResult`. `summary` holds the headline figures that
bench.json carries at the top of the suite's section (e.g. "speedup_vs_png"), `figures` everything measured,
`markdown` the suite's section of bench.md (tables, device named), `plots` the file names it wrote in `ctx.out`.

Artefacts (corpora, trained checkpoints) are made once into `ctx.work` and reused by later runs and suites.
`ctx.quick` shrinks everything to test sizes (tiny presets, few videos, few steps): the figures are then
meaningless but every code path runs.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cslr.datasets.synthetic import cached_corpus
from cslr.io import cache_dir

log = logging.getLogger("cslr.bench")


def default_work_dir() -> Path:
    return cache_dir() / "bench"


def cpu_info() -> dict:
    """{"cpu": model name, "cpu_bf16": native bf16 instructions (AVX512-BF16 or AMX)}: CPU bf16 autocast is
    only fast with them. Linux /proc/cpuinfo; elsewhere the platform's processor string and None."""
    name, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and flags is None:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": name, "cpu_bf16": None if flags is None else bool(flags & {"avx512_bf16", "amx_bf16"})}


@dataclass
class BenchContext:
    out: Path                       # bench.json, bench.md and the plots
    work: Path = field(default_factory=default_work_dir)  # generated corpora and checkpoints, reused across runs
    repeats: int = 5                # timed repeats per figure (median, min, max)
    warmup: int = 1                 # untimed calls before them
    threads: int = 2                # intra-op threads for CPU timings
    workers: int = 2                # loader workers
    quick: bool = False             # test sizes
    skip_compile: bool = False      # student suite: no torch.compile variant
    teacher: str = ""               # a trained teacher checkpoint (else one is trained into work/)
    student: str = ""               # a trained student checkpoint (else one is trained into work/)
    seed: int = 0
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __post_init__(self):
        self.out, self.work = Path(self.out), Path(self.work)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def describe(self) -> dict:
        """The machine and settings, recorded in bench.json so figures are never read without their device."""
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        return {**cpu_info(), "cpu_count": os.cpu_count(), "gpu": gpu,
                "torch": torch.__version__, "repeats": self.repeats, "warmup": self.warmup, "threads": self.threads,
                "workers": self.workers, "quick": self.quick, "device": self.device}


@dataclass
class SuiteResult:
    summary: dict                   # headline figures (bench.json: <suite>.<key>)
    figures: dict                   # all measurements
    markdown: str                   # this suite's section of bench.md
    plots: list[str] = field(default_factory=list)  # files written in ctx.out


# ------------------------------------------------------------------------------------------------ artefacts

ROOT = Path(__file__).resolve().parents[2]


def run_logged(cmd: list[str], what: str, env: dict | None = None) -> None:
    """Run a sub-command (a launcher); on failure raise with its last output lines, so a bench run says why."""
    import subprocess
    import sys

    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    sys.stderr.flush()


def small_corpus(ctx: BenchContext) -> Path:
    """The synthetic corpus the train/student/softtargets suites use: `small` (the default training data, shared
    with launch/teacher.py's cache), or `tiny` with ctx.quick. Generated once."""
    return cached_corpus("tiny" if ctx.quick else "small", seed=0, workers=ctx.workers)


def _train(launcher: str, out: Path, args: list[str], what: str) -> Path:
    """Train with launch/<launcher>.py into `out` (resumes an interrupted run) -> best_model.pth."""
    import sys

    best = out / "best_model.pth"
    if not best.is_file() or not (out / "results.json").is_file():
        run_logged([sys.executable, str(ROOT / "launch" / f"{launcher}.py"), "--output_dir", str(out),
                    "--report_to", "none", "--resume", "auto", *args], what)
    return best


def teacher_checkpoint(ctx: BenchContext) -> Path:
    """ctx.teacher, else a teacher trained once into work/ with the default recipe (configs/teacher.yaml: ~10
    minutes on a 2-core CPU), or a 1-epoch tiny one with ctx.quick."""
    if ctx.teacher:
        return Path(ctx.teacher)
    data = small_corpus(ctx)
    extra = ["--arch", "teacher_tiny", "--epochs", "1", "--num_workers", "0", "--beam_width", "0"] if ctx.quick else []
    name = "teacher-quick" if ctx.quick else "teacher"
    return _train("teacher", ctx.work / name, ["--data", str(data), *extra], "training the benchmark teacher")


def student_checkpoint(ctx: BenchContext) -> Path:
    """ctx.student, else a KD student trained once into work/ from `teacher_checkpoint` with configs/student.yaml
    (or a tiny one for a few steps with ctx.quick)."""
    if ctx.student:
        return Path(ctx.student)
    data, teacher = small_corpus(ctx), teacher_checkpoint(ctx)
    extra = ["--arch", "student_tiny", "--epochs", "1", "--num_workers", "0", "--beam_width", "0"] if ctx.quick else []
    name = "student-quick" if ctx.quick else "student"
    return _train("student", ctx.work / name, ["--data", str(data), "--teacher_checkpoint", str(teacher), *extra],
                  "training the benchmark student")
