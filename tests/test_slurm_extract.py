"""`launch/slurm/extract_pose.sbatch` as a 2-task job array on the real one-node Slurm cluster of
tests/slurm_cluster.py: the two array tasks together extract every video of a tiny corpus exactly once, and
--verify then finds nothing missing.

    pytest -q tests/test_slurm_extract.py   # skipped unless slurm-wlm, munge and mediapipe are installed, as root
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from slurm_cluster import missing_tools, start_cluster
from test_extract_pose import HAVE_MEDIAPIPE, IDS, make_corpus, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason=f"Slurm/munge not installed (missing {missing_tools()})"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm cluster runs slurmd, which needs root"),
    pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe 0.10.21 not installed"),
]
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def test_array_of_two_tasks_extracts_every_video_once(tmp_path):
    cluster = start_cluster(tmp_path / "slurm", cpus=min(2, os.cpu_count() or 1))
    try:
        args = make_corpus(tmp_path / "corpus")
        out = tmp_path / "poses"
        env = {k: v for k, v in clean_env().items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Array indices 1-2, not 0-1: SLURM_ARRAY_TASK_MIN must be honoured.
        job = cluster.sbatch("--array=1-2", "--cpus-per-task=1", "--time=10", f"--output={tmp_path}/task-%a.out",
                             str(REPO / "launch" / "slurm" / "extract_pose.sbatch"), *args, "--out", str(out),
                             "--log-every", "0", env=env, cwd=REPO)
        logs = lambda: "\n".join(p.read_text() for p in sorted(tmp_path.glob("task-*.out")))  # noqa: E731
        for task in (1, 2):
            info = cluster.wait_job(f"{job}_{task}", DONE, timeout=300)
            assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, logs())
    finally:
        cluster.stop()
    reports = [json.loads(p.read_text()) for p in sorted((out / ".extract").glob("task-*.json"))]
    assert [(r["task"], r["tasks"]) for r in reports] == [(0, 2), (1, 2)], logs()
    done = [r["done"] for r in reports]
    assert not set(done[0]) & set(done[1]) and len(done[0]) == len(done[1]) == len(IDS) // 2
    assert sorted(Path(d).name for d in done[0] + done[1]) == sorted(IDS)
    assert "array task 1 (min 1, count 2" in logs() and "1 workers" in logs()
    assert run(args + ["--out", str(out), "--verify"]).returncode == 0
