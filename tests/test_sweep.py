"""launch/sweep.py: a real 2-seed sweep of the tiny teacher recipe (summary figures checked against each seed's
results.json, W&B runs in one group, a rerun that resumes an unfinished seed and leaves done ones alone); with a
fake entry point (seconds): a failing seed listed and not averaged, then completed by a rerun; --parallel; the
statistics; the Slurm array on the test cluster (tests/slurm_cluster.py) when Slurm is installed and we are root.

    pytest -q tests/test_sweep.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest

from conftest import REPO, check_ok, clean_env, run_cmd
from test_trainer import tiny_flags

SWEEP = str(REPO / "launch" / "sweep.py")

# An entry point in miniature: deterministic results from the seed; fails while <out>/FAIL-<seed> exists; while
# <out>/SLOW exists it runs until a signal (SIGTERM, SIGUSR1), then "saves a checkpoint" and exits 0, as the trainer.
FAKE = r'''
import argparse, json, os, signal, sys, time
p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, required=True)
p.add_argument("--output_dir", required=True)
p.add_argument("--resume", default="")
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
os.makedirs(a.output_dir, exist_ok=True)
stopped = []
for sig in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, lambda s, f: stopped.append(s))
t0 = time.time()
open(os.path.join(a.output_dir, "started"), "w").close()
time.sleep(a.sleep)
while os.path.exists(os.path.join(os.path.dirname(a.output_dir), "SLOW")) and not stopped and time.time() < t0 + 120:
    time.sleep(0.05)
with open(os.path.join(a.output_dir, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"seed": a.seed, "resume": a.resume, "start": t0, "end": time.time(),
                        "group": os.environ.get("WANDB_RUN_GROUP"), "stopped": stopped,
                        "threads": os.environ.get("CSLR_CPU_THREADS")}) + "\n")
if stopped:
    os.makedirs(os.path.join(a.output_dir, "checkpoints", "ckpt-1"), exist_ok=True)
    sys.exit(0)
if os.path.exists(os.path.join(os.path.dirname(a.output_dir), f"FAIL-{a.seed}")):
    print("boom", file=sys.stderr)
    sys.exit(3)
s = a.seed
res = {"best_dev_wer": 10.0 + s, "best_epoch": 1 + s % 2, "test_wer": 20.0 + 2 * s, "test_sub": 3 + s,
       "test_del": 2, "test_ins": s, "test_num_ref_words": 50, "global_steps": 7, "wall_time_s": 1.0,
       "test_per_signer": {"S1": {"wer": 15.0 + s}, "S2": {"wer": 25.0 + 3 * s}}, "history": []}
with open(os.path.join(a.output_dir, "results.json"), "w") as f:
    json.dump(res, f)
'''


@pytest.fixture
def fake(tmp_path) -> Path:
    path = tmp_path / "fake_entry.py"
    path.write_text(FAKE)
    return path


def sweep(*args: str, env: dict | None = None, timeout: int = 900):
    return run_cmd([sys.executable, SWEEP, *args], env=env or clean_env(), timeout=timeout)


def results(out: Path, seed: int) -> dict:
    return json.loads((out / f"seed-{seed}" / "results.json").read_text())


# ---------------------------------------------------------------------------------------------- unit
def test_seeds_and_statistics():
    from cslr.recipes.sweep import parse_seeds, stats

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5,1,3") == [3, 4, 5, 1]
    with pytest.raises(ValueError):
        parse_seeds("a,b")
    s = stats([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(statistics.stdev([1, 2, 4]))
    assert (s["min"], s["max"], s["n"]) == (1.0, 4.0, 3)
    assert stats([5.0])["std"] is None and stats([])["n"] == 0


def test_difference_of_two_sweeps_with_its_interval():
    from cslr.recipes.sweep import difference

    d = difference([10.0, 11.0, 12.0], [15.0, 16.0, 17.0])  # stds 1 and 1, n 3 and 3: Welch df 4, t 2.776
    assert d["diff"] == pytest.approx(5.0) and d["se"] == pytest.approx((2 / 3) ** 0.5) and d["df"] == pytest.approx(4)
    assert d["ci95"] == pytest.approx([5 - 2.776 * (2 / 3) ** 0.5, 5 + 2.776 * (2 / 3) ** 0.5]) and d["separated"]
    close = difference([10.0, 11.0, 12.0], [10.5, 12.0, 13.5])
    assert close["diff"] == pytest.approx(1.0) and close["ci95"][0] < 0 < close["ci95"][1] and not close["separated"]
    assert difference([10.0], [12.0, 13.0])["separated"] is None  # one seed: no spread to compare with


def test_compare_cli_on_two_sweeps(fake, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    check_ok(sweep("--seeds", "0,1,2", "--out", str(a), "--", str(fake)))
    check_ok(sweep("--seeds", "4,5,6", "--out", str(b), "--", str(fake)))
    proc = sweep("--compare", str(a), str(b), "--out", str(tmp_path / "cmp.json"))
    check_ok(proc)
    comp = json.loads((tmp_path / "cmp.json").read_text())
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dev = comp["sweeps"][1]["vs_first"]["best_dev_wer"]
    assert dev["diff"] == pytest.approx(4.0) and dev["separated"] is True  # dev WER 10 + seed: 10-12 vs 14-16
    assert comp["sweeps"][0]["stats"]["test_wer"]["mean"] == pytest.approx(22.0)
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {b} | dev WER |"))
    assert row.split(" | ")[2:] == ["4.00", row.split(" | ")[3], "yes |"]
    assert sweep("--compare", str(tmp_path / "none")).returncode == 2


def test_command_may_not_set_what_the_sweep_sets(fake, tmp_path):
    proc = sweep("--seeds", "0", "--out", str(tmp_path / "s"), "--", str(fake), "--seed", "3")
    assert proc.returncode == 2 and "sets --seed, --output_dir and --resume" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------- fake entry point
def test_failed_seed_is_listed_not_averaged_and_a_rerun_completes_it(fake, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "FAIL-1").touch()
    proc = sweep("--seeds", "0,1,2", "--out", str(out), "--", str(fake))
    assert proc.returncode == 1, proc.stderr  # not every seed done
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [0, 2] and summary["failed"] == [1]
    m = summary["metrics"]
    assert m["test_wer"]["n"] == 2 and m["test_wer"]["mean"] == pytest.approx(22.0)  # (20 + 24) / 2, not seed 1's
    assert m["best_dev_wer"]["std"] == pytest.approx(statistics.stdev([10.0, 12.0]))
    row1 = next(r for r in summary["per_seed"] if r["seed"] == 1)
    assert row1["state"] == "failed" and row1["returncode"] == 3 and "best_dev_wer" not in row1
    md = (out / "summary.md").read_text()
    assert "Failed seeds (not in the statistics): 1" in md and "FAILED (exit 3)" in md and "n - 1" in md
    assert "boom" in (out / "seed-1" / "sweep.log").read_text()
    done_before = {s: (out / f"seed-{s}" / "results.json").stat().st_mtime_ns for s in (0, 2)}

    (out / "FAIL-1").unlink()
    proc = sweep("--seeds", "0,1,2", "--out", str(out), "--", str(fake))
    check_ok(proc)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [0, 1, 2] and summary["failed"] == []
    # seeds 0 and 2 were not run again; seed 1 ran twice (failed, then done)
    assert {s: (out / f"seed-{s}" / "results.json").stat().st_mtime_ns for s in (0, 2)} == done_before
    for s, runs in ((0, 1), (1, 2), (2, 1)):
        assert len((out / f"seed-{s}" / "calls.jsonl").read_text().splitlines()) == runs
    # every figure against the seeds' results.json
    res = [results(out, s) for s in (0, 1, 2)]
    m = summary["metrics"]
    for key in ("best_dev_wer", "test_wer", "best_epoch"):
        vals = [r[key] for r in res]
        assert m[key]["mean"] == pytest.approx(statistics.mean(vals)) and m[key]["std"] == pytest.approx(statistics.stdev(vals))
        assert (m[key]["min"], m[key]["max"], m[key]["n"]) == (min(vals), max(vals), 3)
    assert m["test_sub_pct"]["mean"] == pytest.approx(statistics.mean(100 * r["test_sub"] / 50 for r in res))
    assert summary["test_counts"]["ins"]["mean"] == pytest.approx(1.0)
    assert summary["per_signer_test_wer"]["S2"]["mean"] == pytest.approx(statistics.mean([25.0, 28.0, 31.0]))
    # one W&B group for the sweep, the same across reruns
    groups = {json.loads(line)["group"] for s in (0, 1, 2) for line in (out / f"seed-{s}" / "calls.jsonl").read_text().splitlines()}
    assert groups == {summary["group"]} and summary["group"].startswith("sweep-")


def test_another_command_into_the_same_folder_is_refused(fake, tmp_path):
    out = tmp_path / "sweep"
    check_ok(sweep("--seeds", "0", "--out", str(out), "--", str(fake)))
    proc = sweep("--seeds", "0", "--out", str(out), "--", str(fake), "--sleep", "0.1")
    assert proc.returncode == 2 and "holds a sweep of another command" in proc.stderr, proc.stderr


def test_parallel_runs_seeds_at_once_and_shares_the_cores(fake, tmp_path):
    out = tmp_path / "sweep"
    env = clean_env()
    env.pop("CSLR_CPU_THREADS")
    check_ok(sweep("--seeds", "0,1", "--parallel", "2", "--out", str(out), "--", str(fake), "--sleep", "3", env=env))
    calls = [json.loads((out / f"seed-{s}" / "calls.jsonl").read_text()) for s in (0, 1)]
    assert max(c["start"] for c in calls) < min(c["end"] for c in calls)  # they overlapped
    assert {c["threads"] for c in calls} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}


def test_a_signal_stops_the_running_seed_which_a_rerun_resumes(fake, tmp_path):
    """SIGTERM to the sweep reaches the running seed, which saves and exits 0: the seed is unfinished (not failed),
    no further seed starts; the rerun gives it --resume auto and runs the rest."""
    import signal
    import subprocess
    import time

    out = tmp_path / "sweep"
    out.mkdir()
    (out / "SLOW").touch()
    proc = subprocess.Popen([sys.executable, SWEEP, "--seeds", "0,1", "--out", str(out), "--", str(fake)],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "seed-0" / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    call = json.loads((out / "seed-0" / "calls.jsonl").read_text())
    assert call["stopped"] == [signal.SIGTERM]
    status = json.loads((out / "seed-0" / "sweep_status.json").read_text())
    assert status["returncode"] is None and status["stopped_by_signal"] == signal.SIGTERM
    assert not (out / "seed-1").exists()  # never started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unfinished"] == [0, 1] and not summary["failed"] and summary["metrics"]["test_wer"]["n"] == 0

    (out / "SLOW").unlink()
    check_ok(sweep("--seeds", "0,1", "--out", str(out), "--", str(fake)))
    calls = [json.loads(x) for x in (out / "seed-0" / "calls.jsonl").read_text().splitlines()]
    assert [c["resume"] for c in calls] == ["", "auto"]
    assert json.loads((out / "summary.json").read_text())["done"] == [0, 1]


# ---------------------------------------------------------------------------------------------- the real recipe
@pytest.fixture(scope="module")
def real_sweep(tiny_data, tmp_path_factory):
    """Two seeds of the tiny teacher recipe (1 epoch), W&B offline."""
    out = tmp_path_factory.mktemp("sweep") / "teacher"
    flags = tiny_flags(tiny_data, Path("unused"), "--epochs", "1", "--report_to", "wandb")
    i = flags.index("--output_dir")
    del flags[i:i + 2]
    j = flags.index("--seed")
    del flags[j:j + 2]
    command = [str(REPO / "launch" / "teacher.py"), *flags]
    proc = sweep("--seeds", "0,1", "--out", str(out), "--", *command, timeout=1200)
    return out, command, proc


def test_real_sweep_summary_matches_the_runs(real_sweep):
    from wandb_reader import read_records

    out, _, proc = real_sweep
    check_ok(proc)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [0, 1] and not summary["failed"]
    res = [results(out, s) for s in (0, 1)]
    assert res[0]["history"] and res[0]["test_wer"] is not None
    for key, label in (("best_dev_wer", "dev WER"), ("test_wer", "test WER")):
        vals = [r[key] for r in res]
        got = summary["metrics"][key]
        assert got["mean"] == pytest.approx(statistics.mean(vals)) and got["std"] == pytest.approx(statistics.stdev(vals))
        assert (got["min"], got["max"]) == (min(vals), max(vals))
        assert f"| {label} | {statistics.mean(vals):.2f} | {statistics.stdev(vals):.2f} |" in (out / "summary.md").read_text()
    for k in ("sub", "del", "ins"):
        assert summary["test_counts"][k]["mean"] == pytest.approx(statistics.mean(r[f"test_{k}"] for r in res))
    signers = set(res[0]["test_per_signer"])
    assert set(summary["per_signer_test_wer"]) == signers
    for s in signers:
        assert summary["per_signer_test_wer"][s]["mean"] == pytest.approx(
            statistics.mean(r["test_per_signer"][s]["wer"] for r in res))
    # each seed ran with its own seed, and its W&B run sits in the sweep's group
    import yaml

    for s in (0, 1):
        assert yaml.safe_load((out / f"seed-{s}" / "config.yaml").read_text())["run"]["seed"] == s
        files = list((out / f"seed-{s}" / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, files
        groups = {r.run.run_group for r in read_records(files[0]) if r.WhichOneof("record_type") == "run"}
        assert groups == {summary["group"]}, groups


def test_real_rerun_resumes_an_unfinished_seed_only(real_sweep):
    """Seed 1 loses its results.json (as if killed after its last checkpoint): the rerun passes --resume auto to
    it alone, it ends with the same figures, and seed 0 is not touched."""
    out, command, _ = real_sweep
    before = results(out, 1)
    mtime0 = (out / "seed-0" / "results.json").stat().st_mtime_ns
    (out / "seed-1" / "results.json").unlink()
    (out / "summary.json").unlink()
    proc = sweep("--seeds", "0,1", "--out", str(out), "--", *command, timeout=900)
    check_ok(proc)
    status = json.loads((out / "seed-1" / "sweep_status.json").read_text())
    assert status["command"][-2:] == ["--resume", "auto"] and status["attempts"] == 2
    assert "resumed from" in (out / "seed-1" / "training.log").read_text()
    after = results(out, 1)
    assert (after["best_dev_wer"], after["test_wer"], after["global_steps"]) == \
        (before["best_dev_wer"], before["test_wer"], before["global_steps"])
    assert (out / "seed-0" / "results.json").stat().st_mtime_ns == mtime0
    assert json.loads((out / "summary.json").read_text())["done"] == [0, 1]


# ---------------------------------------------------------------------------------------------- Slurm
def _slurm_ready() -> bool:
    from slurm_cluster import missing_tools

    return not missing_tools() and os.geteuid() == 0


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_ready(), reason="needs slurm-wlm + munge and root (tests/slurm_cluster.py)")
def test_slurm_array_sweep_and_summary_job(fake, tmp_path):
    from slurm_cluster import start_cluster

    cluster = start_cluster(tmp_path / "slurm", cpus=min(2, os.cpu_count() or 1))
    try:
        out = tmp_path / "sweep"
        out.mkdir()
        (out / "FAIL-2").touch()
        env = cluster.env(clean_env())
        env = {k: v for k, v in env.items() if not k.startswith(("SBATCH_", "SRUN_", "SLURM_")) or k == "SLURM_CONF"}
        proc = sweep("--seeds", "0,1,2", "--slurm", "--parallel", "2", "--sbatch",
                     "--gpus-per-node=0 --cpus-per-task=1 --time=5", "--out", str(out), "--", str(fake), env=env)
        check_ok(proc)
        jobs = json.loads((out / "slurm_jobs.json").read_text())
        assert jobs["tasks"] == [0, 1, 2] and jobs["array"] and jobs["summary"]
        done = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}
        info = cluster.wait_job(int(jobs["summary"]), done, timeout=180)
        logs = "\n".join(p.read_text() for p in out.glob("slurm-*.out"))
        summary = json.loads((out / "summary.json").read_text())
        assert summary["done"] == [0, 1] and summary["failed"] == [2], (info, logs)
        assert json.loads((out / "seed-0" / "sweep_status.json").read_text())["slurm_job"].startswith(jobs["array"])
        assert info["JobState"] == "FAILED"  # the summary job's exit status says a seed failed
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_ready(), reason="needs slurm-wlm + munge and root (tests/slurm_cluster.py)")
def test_slurm_warning_saves_requeues_and_resumes_the_seed(fake, tmp_path):
    """USR1 to an array task's batch shell (what --signal=B:USR1@300 sends): sweep.py passes it to the seed, which
    saves and exits 0; the task requeues itself and its second start resumes (--resume auto) to the end."""
    import time

    from slurm_cluster import start_cluster

    cluster = start_cluster(tmp_path / "slurm", cpus=min(2, os.cpu_count() or 1))
    try:
        out = tmp_path / "sweep"
        out.mkdir()
        (out / "SLOW").touch()
        env = cluster.env(clean_env())
        env = {k: v for k, v in env.items() if not k.startswith(("SBATCH_", "SRUN_", "SLURM_")) or k == "SLURM_CONF"}
        check_ok(sweep("--seeds", "5", "--slurm", "--sbatch", "--gpus-per-node=0 --cpus-per-task=1 --time=5",
                       "--out", str(out), "--", str(fake), env=env))
        jobs = json.loads((out / "slurm_jobs.json").read_text())
        deadline = time.time() + 120
        while not (out / "seed-5" / "started").exists():
            assert time.time() < deadline, cluster.logs()
            time.sleep(0.2)
        cluster.run("scancel", "--signal=USR1", "--batch", f"{jobs['array']}_0")
        deadline = time.time() + 60
        while not (out / "seed-5" / "calls.jsonl").exists():
            assert time.time() < deadline, cluster.logs()
            time.sleep(0.2)
        (out / "SLOW").unlink()
        info = cluster.wait_job(int(jobs["summary"]), {"COMPLETED", "FAILED", "CANCELLED"}, timeout=240)
        logs = "\n".join(p.read_text() for p in out.glob("slurm-*.out"))
        calls = [json.loads(x) for x in (out / "seed-5" / "calls.jsonl").read_text().splitlines()]
        assert [c["resume"] for c in calls] == ["", "auto"] and calls[0]["stopped"] == [10], (calls, logs)
        assert "requeueing job" in logs and "(restart 1)" in logs, logs
        assert info["JobState"] == "COMPLETED", (info, logs)
        assert json.loads((out / "summary.json").read_text())["done"] == [5], logs
    finally:
        cluster.stop()
