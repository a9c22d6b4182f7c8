"""Benchmarks: loader, training step, student inference and soft-target storage, as ratios measured in one run.

    python launch/benchmark.py                                  # every suite -> bench/bench.json, bench.md, *.png
    python launch/benchmark.py --suite loader,student --out bench_cpu

Modules: `timing` (repeat/median/min/max timing, thread control), `context` (settings shared by the suites and
the artefacts they need: corpora, trained checkpoints), one module per suite (`loader`, `train`, `student`,
`softtargets`), each exposing `run(ctx) -> SuiteResult`.
"""
