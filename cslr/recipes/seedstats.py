"""Statistics over seeds: mean, sample std, min, max (`stats`) and the difference of two sets of seeds with its
95 % interval (`difference`, Welch). Used by `cslr.recipes.sweep` (summaries, `--compare`)."""

from __future__ import annotations

import math
import statistics


def stats(values: list[float]) -> dict:
    """{"mean", "std" (sample std, n - 1; None for one value), "min", "max", "n"} of the values given."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n": len(vals)}


# Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom (beyond 30 the 30th, slightly wide). The Welch
# df is rounded down, which widens the interval.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def difference(base: list[float], other: list[float]) -> dict:
    """other - base: the difference of means, Welch's standard error and degrees of freedom, its 95 % interval, and
    whether that interval excludes 0 ("separated": larger than the seeds' spread explains)."""
    a, b = stats(base), stats(other)
    out = {"diff": None, "se": None, "df": None, "ci95": None, "separated": None}
    if a["n"] == 0 or b["n"] == 0:
        return out
    out["diff"] = b["mean"] - a["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return out  # no spread to compare with
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    out["se"] = se
    if se == 0:
        out["separated"] = out["diff"] != 0
        return out
    df = (va + vb) ** 2 / (va ** 2 / (a["n"] - 1) + vb ** 2 / (b["n"] - 1))
    t = T975[min(int(df), len(T975)) - 1] if df >= 1 else T975[0]
    lo, hi = out["diff"] - t * se, out["diff"] + t * se
    out.update(df=df, ci95=[lo, hi], separated=lo > 0 or hi < 0)
    return out
