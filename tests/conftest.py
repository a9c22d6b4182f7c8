"""Shared fixtures: the tiny synthetic corpus (prepared once per session) and a launcher for real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The built-in corpus at the `tiny` preset (a few dozen short videos)."""
    from cslr.datasets.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("synth") / "tiny"
    prepare_synthetic(out, preset="tiny", seed=0, workers=1, progress=False)
    return out


def clean_env(**extra) -> dict:
    """A subprocess environment: offline W&B, one thread per process, no stray accelerate config."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("ACCELERATE_", "WANDB_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_")):
            env.pop(k)
    env.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        "HF_HOME": str(Path(env.get("TMPDIR", "/tmp")) / "cslr-hf"), "TOKENIZERS_PARALLELISM": "false",
    })
    env.update(extra)
    return env


def run_cmd(cmd: list[str], env: dict | None = None, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)
    return proc


def accelerate_cmd(*launch_args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *launch_args]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
