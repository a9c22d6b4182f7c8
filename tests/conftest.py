"""Shared fixtures and helpers: the tiny synthetic corpus (prepared once per session), a launcher for real
processes, and untrained checkpoints written as a training run writes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The built-in corpus at the `tiny` preset (a few dozen short videos)."""
    from cslr.datasets.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("synth") / "tiny"
    prepare_synthetic(out, preset="tiny", seed=0, workers=1, progress=False)
    return out


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"


def randomise_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every norm layer random statistics and affine parameters, as after training.

    At init BatchNorm maps 0 to 0 in eval mode, which would hide padded frames that leak through.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model


def save_untrained(tiny_data: Path, folder: Path, arch: str = "teacher_tiny", modality: str = "rgb+pose",
                   randomise: bool = False) -> Path:
    """An untrained `arch` written as a run's best_model.pth (as Trainer.save_best does) whose config points at
    `tiny_data` with 32x32 crops; `randomise` gives its norm layers trained-looking statistics."""
    from cslr.datasets.vocab import Vocabulary
    from cslr.models.checkpoint import save_portable
    from cslr.trainer.config import ModelConfig, TrainConfig, plain_dict
    from cslr.models.checkpoint import build_model

    torch.manual_seed(0)
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    model, meta = build_model(ModelConfig(arch=arch, modality=modality, dropout=0.1), len(vocab))
    if randomise:
        randomise_norms(model)
    config = plain_dict(TrainConfig())
    config["data"].update(data=str(tiny_data), image_size=32)
    path = folder / "best_model.pth"
    save_portable(path, model.state_dict(), {"config": config, "vocab": list(vocab.glosses), **meta,
                                             "epoch": 1, "dev_wer": 100.0, "protocol": "phoenix2014"})
    return path


def clean_env(**extra) -> dict:
    """A subprocess environment: offline W&B, one thread per process, no stray accelerate config."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("ACCELERATE_", "WANDB_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_")):
            env.pop(k)
    env.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "CSLR_CPU_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
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
