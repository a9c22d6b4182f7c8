"""Where a run executes: CPU compute threads, the one Accelerator factory, the process group's teardown.

Every entry point (training, evaluation, soft targets, compare, benchmarks) builds its `Accelerator` here, so DDP
and DeepSpeed also run on CPU (gloo) and a one-process CPU run computes on all of its cores.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, ProjectConfiguration


def set_cpu_threads() -> int:
    """Intra-op threads of this process on a machine without CUDA -> the number set (on GPU machines: unchanged).

    `accelerate launch` exports OMP_NUM_THREADS=1 unless given --num_cpu_threads_per_process (or a CPU config), so
    a one-process CPU run would compute on one core of many. Here: the CPUs this process may run on (its
    affinity: a Slurm or container limit counts) divided by the processes of this machine (LOCAL_WORLD_SIZE), at
    least 1, or exactly CSLR_CPU_THREADS when set. Data-loader workers keep one thread each (pipeline).
    """
    if torch.cuda.is_available():
        return torch.get_num_threads()
    wanted = os.environ.get("CSLR_CPU_THREADS", "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ValueError(f"CSLR_CPU_THREADS={wanted!r}: expected a positive integer")
        n = int(wanted)
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(n)
    return n


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast supports bf16


def make_accelerator(accumulation_steps: int = 1, mixed_precision: str | None = None, log_with=None,
                     project_dir: str | Path | None = None, timeout_minutes: int = 60,
                     cpu: bool = False) -> Accelerator:
    """An Accelerator that also runs DDP and DeepSpeed on CPU (gloo); sets this process's CPU threads first.

    Args:
        accumulation_steps: micro-batches per optimizer step.
        mixed_precision: "no", "fp16", "bf16" or None (the launch config's).
        log_with: trackers ("wandb", "tensorboard") or None.
        project_dir: the run folder (TensorBoard logs go to its `tensorboard/`).
        timeout_minutes: collective timeout (soft-target ranks wait for each other's shards for long).
        cpu: stay on the CPU even where CUDA is present.
    """
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=False)]
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
    if distributed and not torch.cuda.is_available():
        # Without this, DeepSpeed on CPU initialises no usable group and every rank believes it is alone.
        handlers.append(InitProcessGroupKwargs(backend="gloo", timeout=datetime.timedelta(minutes=timeout_minutes)))
    elif distributed:
        handlers.append(InitProcessGroupKwargs(timeout=datetime.timedelta(minutes=timeout_minutes)))
    set_cpu_threads()
    project = None
    if project_dir is not None:
        project = ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(Path(project_dir) / "tensorboard"))
    return Accelerator(gradient_accumulation_steps=accumulation_steps, mixed_precision=mixed_precision,
                       log_with=log_with, project_config=project, kwargs_handlers=handlers, cpu=cpu)


def shutdown_distributed() -> None:
    """Tear the process group down before the interpreter does: gloo's threads, destroyed at exit while a peer
    rank is still leaving, can abort a rank ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
