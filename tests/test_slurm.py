"""The project's Slurm batch scripts on a real one-node Slurm cluster started for the session on loopback
(`tests/slurm_cluster.py`: munged, slurmctld, slurmd as root, state in a temp folder, stopped by pid).

A tiny 2-process CPU DDP run submitted with `launch/slurm/single_node.sbatch` writes its results; the same run
submitted with `launch/slurm/multi_node.sbatch` (one node) and warned with USR1 mid run (as `--signal=B:USR1@...`
would) saves, requeues itself, resumes with `--resume auto` and ends with the same weights.

    pytest -q tests/test_slurm.py          # skipped unless slurm-wlm and munge are installed and we are root
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from test_fault_tolerance import assert_same_weights, newest_step
from test_trainer import final_weights, tiny_flags

from slurm_cluster import missing_tools, start_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason=f"Slurm/munge not installed (missing {missing_tools()}; "
                                                     "apt-get install slurm-wlm munge)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm cluster runs slurmd, which needs root"),
]

CPUS = min(2, os.cpu_count() or 1)
# 6 epochs x 5 optimizer steps per rank (2 ranks, batch 4), a checkpoint every 3 steps
RUN = ("--epochs", "6", "--save_every_steps", "3")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=CPUS)
    yield cluster
    cluster.stop()


def job_env() -> dict:
    """The submitting shell: the venv on PATH, 2 CPU ranks, no variables of an enclosing Slurm job."""
    env = clean_env(NPROC_PER_NODE="2", ACCELERATE_USE_CPU="true",
                    ACCELERATE_ARGS="--mixed_precision no --dynamo_backend no")
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def submit(slurm, script: str, log: Path, data: Path, out: Path, *sbatch_args: str) -> int:
    return slurm.sbatch("--gpus-per-node=0", f"--cpus-per-task={CPUS}", "--time=10", f"--output={log}",
                        *sbatch_args, str(REPO / "launch" / "slurm" / script), "launch/teacher.py",
                        *tiny_flags(data, out, *RUN), env=job_env(), cwd=REPO)


def explain(log: Path, out: Path) -> str:
    parts = [f"--- {log}\n" + (log.read_text(errors="replace")[-4000:] if log.is_file() else "(none)")]
    if (out / "training.log").is_file():
        parts.append("--- training.log\n" + (out / "training.log").read_text()[-3000:])
    return "\n".join(parts)


@pytest.fixture(scope="module")
def uninterrupted_job(slurm, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-job")
    out, log = root / "run", root / "slurm.out"
    job = submit(slurm, "single_node.sbatch", log, tiny_data, out)
    info = slurm.wait_job(job, DONE, timeout=300)
    return info, out, log


def test_batch_job_trains_two_ranks_and_writes_results(uninterrupted_job):
    info, out, log = uninterrupted_job
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", explain(log, out)
    assert info["Restarts"] == "0"
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["epochs_run"] == 6 and res["global_steps"] == 30
    assert res["test_wer"] is not None and res["best_dev_wer"] is not None
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    text = log.read_text()
    assert "2 processes" in text and "training exited with status 0" in text
    assert "requeueing" not in text
    assert "--resume auto: no complete checkpoint" in (out / "training.log").read_text()


def test_warned_job_saves_requeues_and_resumes_to_the_same_weights(slurm, tiny_data, tmp_path, uninterrupted_job):
    """USR1 to the batch shell only (`scancel --signal=USR1 --batch`, what `--signal=B:USR1@300` does): the
    script forwards it, both ranks finish the step and save, the script requeues the job, the second start
    resumes from that checkpoint and the run ends with the uninterrupted job's weights and results."""
    _, ref, _ = uninterrupted_job
    out, log = tmp_path / "run", tmp_path / "slurm.out"
    job = submit(slurm, "multi_node.sbatch", log, tiny_data, out, "--nodes=1")
    deadline = time.time() + 180
    while newest_step(out) < 3:  # mid run: after the first periodic checkpoint
        state = slurm.job(job)["JobState"]
        assert state in ("PENDING", "CONFIGURING", "RUNNING") and time.time() < deadline, (state, explain(log, out))
        time.sleep(0.1)
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    info = slurm.wait_job(job, DONE, timeout=300, until=None)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", explain(log, out)
    assert info["Restarts"] == "1", (info, explain(log, out))

    text, train_log = log.read_text(), (out / "training.log").read_text()
    assert "(restart 0)" in text and "(restart 1)" in text and "requeueing job" in text
    assert "1 nodes x 2 processes" in text
    stopped = [int(s) for s in re.findall(r"stopped on a signal after step (\d+)", train_log)]
    resumed = [int(s) for s in re.findall(r"resumed from \S+ \(epoch \d+, batch \d+, step (\d+)\)", train_log)]
    assert len(stopped) == 1 and 3 <= stopped[0] < 30 and resumed == stopped, (stopped, resumed)
    assert text.count("received signal 10") == 2  # both ranks got the forwarded warning

    assert_same_weights(final_weights(ref), final_weights(out))
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    assert (b["world_size"], b["global_steps"], b["best_epoch"], b["best_dev_wer"], b["test_wer"]) == \
        (a["world_size"], a["global_steps"], a["best_epoch"], a["best_dev_wer"], a["test_wer"])
