"""The GPU check (issue #16): one table, under 8 minutes on one GPU. See cslr/bench/gpu.py for the rows.

    python launch/gpu_check.py                              # CUDA machine -> docs/bench/gpu/gpu_check.{json,md}
    python launch/gpu_check.py --dry-run --out /tmp/gpu-dry # any machine: CPU stand-ins, every row marked DRY

Exit status 0 when every row ran, 1 when some row failed (the table says which and why).
"""

import argparse
import sys
from pathlib import Path

from cslr.bench.gpu import GPUCheckConfig, markdown, run_check, table, write_report

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU stand-ins for every GPU row (no CUDA needed)")
    p.add_argument("--out", default="", help="folder for gpu_check.json/.md (default docs/bench/gpu; "
                                             "with --dry-run docs/bench/gpu/dry)")
    args = p.parse_args()
    cfg = GPUCheckConfig.dry_run() if args.dry_run else GPUCheckConfig()
    out = Path(args.out) if args.out else ROOT / "docs" / "bench" / "gpu" / ("dry" if args.dry_run else "")
    try:
        report = run_check(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    except RuntimeError as e:
        p.error(str(e))
    write_report(report, out)
    print(markdown(report))
    print(f"-> {out / 'gpu_check.md'}", file=sys.stderr)
    sys.exit(0 if report["ok"] else 1)
