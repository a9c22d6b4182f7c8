"""Benchmarks: loader vs per-frame PNG, training step and data wait, student inference runtimes, soft-target sizes,
recognition of a video end to end (launch/recognize.py: stages, frames/s, streaming latency).

    python launch/benchmark.py                                      # every suite -> bench/
    python launch/benchmark.py --suite loader,student --out bench_cpu
    python launch/benchmark.py --suite train,loader,student --out bench_gpu        # on a GPU machine: base presets too
    python launch/benchmark.py --quick --out /tmp/b                 # test sizes: every code path in about a minute

Prints the headline figures against the targets and writes <out>/bench.json (headline keys per suite, e.g.
loader.speedup_vs_png, plus every figure with median/min/max), <out>/bench.md (tables) and one plot per suite.
Corpora and the checkpoints the suites need are made once into --work (default ~/.cache/cslr/bench) and reused:
the first full run trains a teacher (~10 min on 2 CPU cores) and a student unless --teacher / --student are given.
Exit status 1 if a suite failed (its error is in bench.json and bench.md; the other suites still run).

Tests: `/work/venv/bin/pytest tests/test_benchmark.py -q`
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from cslr.bench import report
from cslr.bench.context import BenchContext, default_work_dir


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default=",".join(report.SUITES),
                   help=f"comma-separated suites to run (default all: {','.join(report.SUITES)})")
    p.add_argument("--out", default="bench", help="output folder for bench.json, bench.md and plots")
    p.add_argument("--work", default=str(default_work_dir()), help="cache of generated corpora and checkpoints")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median, min, max)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repeats before them")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads for inference and step timings")
    p.add_argument("--workers", type=int, default=2, help="loader workers")
    p.add_argument("--teacher", default="", help="trained teacher checkpoint (default: train one into --work)")
    p.add_argument("--student", default="", help="trained student checkpoint (default: train one into --work)")
    p.add_argument("--quick", action="store_true", help="test sizes: tiny data, few steps (figures meaningless)")
    p.add_argument("--skip_compile", action="store_true",
                   help="student suite without the torch.compile variant (inductor compiles for ~10 min on 2 cores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in args.suites if s not in report.SUITES]
    if unknown or not args.suites:
        p.error(f"--suite: unknown {unknown}; choose from {','.join(report.SUITES)}")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.workers < 0:
        p.error("--repeats and --threads must be >= 1, --warmup and --workers >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ctx = BenchContext(out=Path(args.out), work=Path(args.work), repeats=args.repeats, warmup=args.warmup,
                       threads=args.threads, workers=args.workers, quick=args.quick, skip_compile=args.skip_compile,
                       teacher=args.teacher, student=args.student, seed=args.seed)
    bench = report.load_existing(ctx.out / "bench.json")
    bench["settings"] = ctx.describe()
    failed = []
    for suite in args.suites:
        logging.info("suite %s ...", suite)
        t0 = time.perf_counter()
        try:
            result = importlib.import_module(f"cslr.bench.{suite}").run(ctx)
            bench[suite] = report.section(result, ctx, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001  one suite's failure must not lose the others' figures
            traceback.print_exc()
            bench[suite] = report.section(None, ctx, time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
            failed.append(suite)
        report.write(ctx.out, bench)  # after each suite: a long run never loses what it measured
    print()
    print(report.table(report.headline(bench), ("figure", "value", "target", "status")))
    print(f"\nwrote {ctx.out / 'bench.json'}, {ctx.out / 'bench.md'}")
    if failed:
        print(f"failed suites: {', '.join(failed)} (see bench.md)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
