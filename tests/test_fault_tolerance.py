"""Fault tolerance without Slurm, with real processes on the tiny corpus: a run killed with SIGKILL (during a
checkpoint save and at an arbitrary step) or stopped with SIGTERM, each time resumed with `--resume auto`,
ends with exactly the weights of an uninterrupted run (CPU), losing only the steps since its last checkpoint;
and two `accelerate launch` invocations (`--num_machines 2`, machine ranks 0 and 1, c10d rendezvous over
loopback, gloo) train one model together, step for step like one 2-process launch.

    pytest -q tests/test_fault_tolerance.py
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, accelerate_cmd, check_ok, clean_env, free_port, run_cmd
from test_trainer import final_weights, tiny_flags

from cslr.models.checkpoint import load_portable
from cslr.trainer.checkpoint import STATE_FILE, list_checkpoints

TEACHER = str(REPO / "launch" / "teacher.py")
# 4 epochs x 9 optimizer steps (one process, batch 4, 36 train videos), a checkpoint every 3 steps
RUN = ("--epochs", "4", "--save_every_steps", "3", "--dropout", "0.2")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "full"
    check_ok(run_cmd([sys.executable, TEACHER, *tiny_flags(tiny_data, out, *RUN)], timeout=600))
    return out


# ---------------------------------------------------------------------------------------------- helpers
def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A training process (one rank, no launcher) writing its console to a numbered log beside `out`."""
    n = len(list(out.parent.glob(f"{out.name}-console-*.txt")))
    log = open(out.parent / f"{out.name}-console-{n}.txt", "w")
    return subprocess.Popen([sys.executable, TEACHER, *tiny_flags(data, out, *RUN, *extra)], cwd=REPO,
                            env=clean_env(), stdout=log, stderr=subprocess.STDOUT)


def newest_step(out: Path) -> int:
    """Optimizer step of the newest complete checkpoint (-1 if none)."""
    ckpts = list_checkpoints(out / "checkpoints")
    return json.loads((ckpts[-1] / STATE_FILE).read_text())["global_step"] if ckpts else -1


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120, poll: float = 0.01) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (exit {proc.returncode}) before the moment to interrupt it")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to interrupt the run")
        if poll:
            time.sleep(poll)


def resumed_from(out: Path) -> list[int]:
    """Global steps the run resumed from, in order (training.log is appended to by every launch)."""
    return [int(s) for s in re.findall(r"resumed from \S+ \(epoch \d+, batch \d+, step (\d+)\)",
                                       (out / "training.log").read_text())]


def listening(port: int) -> bool:
    """Some socket of this host listens on TCP `port` (read from /proc, so the listener sees no connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return False


def tmp_checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return [p for p in d.iterdir() if p.name.startswith(".tmp-")] if d.is_dir() else []


# ---------------------------------------------------------------------------------------------- SIGKILL / SIGTERM
def test_killed_and_stopped_runs_resume_to_the_same_weights(tiny_data, tmp_path, uninterrupted):
    """SIGKILL while a checkpoint is being written, SIGTERM mid-epoch, SIGKILL at an arbitrary step: each resumed
    with --resume auto from the newest complete checkpoint; the final weights equal the uninterrupted run's."""
    out = tmp_path / "run"

    # 1. SIGKILL during a save: once one checkpoint is complete, kill as soon as the next `.tmp-` folder appears
    proc = start(tiny_data, out)
    wait_until(proc, lambda: newest_step(out) >= 3)
    wait_until(proc, lambda: bool(tmp_checkpoints(out)), poll=0)  # tight loop: a save lasts milliseconds
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    assert tmp_checkpoints(out), "the kill came after the save had completed"  # an unfinished save is left
    kept = newest_step(out)
    assert kept >= 3, kept  # the previous checkpoint is intact and complete
    # A folder that is not complete must never be resumed from: an unfinished save (no trainer_state.json) with
    # a higher step, and a stale `.tmp-` folder that even holds a trainer_state.json.
    fake = out / "checkpoints" / "ckpt-e0003-s000000999"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"truncated")
    stale = out / "checkpoints" / ".tmp-ckpt-e0003-s000000998"
    stale.mkdir(exist_ok=True)
    (stale / STATE_FILE).write_text(json.dumps({"global_step": 998}))
    best = out / "best_model.pth"
    if best.exists():  # written by rename: whatever is there loads
        load_portable(best)

    # 2. resume, then SIGTERM mid-epoch: the trainer finishes its step, saves and exits 0
    proc = start(tiny_data, out, "--resume", "auto")
    wait_until(proc, lambda: newest_step(out) >= kept + 5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    log = (out / "training.log").read_text()
    stopped = [int(s) for s in re.findall(r"stopped on a signal after step (\d+)", log)]
    assert len(stopped) == 1 and stopped[0] == newest_step(out), (stopped, newest_step(out))
    assert resumed_from(out) == [kept]
    assert not fake.exists() or not (fake / STATE_FILE).exists()
    assert not stale.exists()  # the next save removed the leftovers of the killed one

    # 3. resume, then SIGKILL at an arbitrary moment of a step (not during a save)
    proc = start(tiny_data, out, "--resume", "auto")
    wait_until(proc, lambda: newest_step(out) >= stopped[0] + 4)
    time.sleep(0.25)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    kept3 = newest_step(out)

    # 4. resume to the end
    proc = start(tiny_data, out, "--resume", "auto")
    assert proc.wait(300) == 0, (out.parent / f"{out.name}-console-3.txt").read_text()[-3000:]
    assert resumed_from(out) == [kept, stopped[0], kept3]
    assert_same_weights(final_weights(uninterrupted), final_weights(out))
    a, b = (json.loads((d / "results.json").read_text()) for d in (uninterrupted, out))
    assert (b["global_steps"], b["best_epoch"], b["best_dev_wer"], b["test_wer"]) == \
        (a["global_steps"], a["best_epoch"], a["best_dev_wer"], a["test_wer"])
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    # an epoch's mean train loss is the same where no interruption fell inside the epoch
    steps_per_epoch = a["global_steps"] // 4
    cut = {s // steps_per_epoch for s in (kept, stopped[0], kept3) if s % steps_per_epoch}
    whole = [i for i in range(4) if i not in cut]
    assert whole and [b["history"][i]["train_loss"] for i in whole] == \
        pytest.approx([a["history"][i]["train_loss"] for i in whole])


# ---------------------------------------------------------------------------------------------- two machines
def test_two_machines_over_loopback_train_together(tiny_data, tmp_path):
    """Machine ranks 0 and 1 (one process each) meet through a c10d rendezvous on 127.0.0.1 and train with
    gloo: one run of world size 2, with the weights of a single 2-process launch."""
    env = clean_env(ACCELERATE_USE_CPU="true")
    common = ["--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu"]
    run = ("--epochs", "2")
    ref = tmp_path / "one_machine"
    check_ok(run_cmd(accelerate_cmd(*common, "--num_processes", "2", "--num_machines", "1", "--main_process_port",
                                    str(free_port()), TEACHER, *tiny_flags(tiny_data, ref, *run)), env=env))
    out, port = tmp_path / "two_machines", free_port()
    procs = []
    for rank in (0, 1):
        cmd = accelerate_cmd(*common, "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                             "--rdzv_backend", "c10d", "--main_process_ip", "127.0.0.1", "--main_process_port",
                             str(port), TEACHER, *tiny_flags(tiny_data, out, *run))
        log = open(tmp_path / f"machine{rank}.txt", "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        if rank == 0:
            # Machine 0 first checks that the port is free, then hosts the rendezvous store on it: let it bind
            # before machine 1 starts (on one host machine 1 could otherwise take the port and stall both).
            wait_until(procs[0], lambda: listening(port), timeout=120)
    try:
        deadline = time.time() + 600
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            assert not failed and time.time() < deadline, "a machine failed or the run stalled"
            time.sleep(0.2)
    except AssertionError:
        for p in procs:
            p.kill()
            p.wait()
        raise AssertionError("\n".join((tmp_path / f"machine{r}.txt").read_text()[-4000:] for r in (0, 1)))
    assert [p.returncode for p in procs] == [0, 0]
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["epochs_run"] == 2
    assert "2 processes (MULTI_CPU)" in (out / "training.log").read_text()
    assert_same_weights(final_weights(ref), final_weights(out))
    assert res["best_dev_wer"] == json.loads((ref / "results.json").read_text())["best_dev_wer"]
