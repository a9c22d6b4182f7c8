"""What a run leaves for people: `training.log`, `training_curves.png`, trackers (W&B, TensorBoard)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from cslr.io import save_figure

logger = logging.getLogger("cslr")


def setup_logging(output_dir: Path | None, is_main: bool) -> None:
    """Console + `training.log` on the main process; warnings only elsewhere (logging from rank 0)."""
    root = logging.getLogger("cslr")
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if is_main and output_dir is not None:
        fh = logging.FileHandler(output_dir / "training.log", mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)


def wandb_mode_note() -> str | None:
    """Run W&B offline, never prompting, when no credentials exist. Returns a one-line note if it did so."""
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return None  # the user chose
    key = _netrc_key()
    if key:
        return None
    os.environ["WANDB_MODE"] = "offline"
    return "W&B: no credentials found, logging offline (sync later with `wandb sync <output_dir>/wandb/offline-run-*`)"


def _netrc_key() -> str | None:
    import netrc

    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return auth[2] if auth else None


def flat_config(d: dict, prefix: str = "") -> dict:
    """Nested config -> {"section.key": scalar} (TensorBoard hparams take scalars and strings only)."""
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, name + "."))
        elif isinstance(v, (list, tuple)):
            out[name] = str(list(v))
        else:
            out[name] = v
    return out


def plot_curves(history: list[dict], steps: list[dict], path: Path) -> None:
    """Loss (per logged step and per epoch), dev WER and learning rate in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        axes[0].plot([s["step"] for s in steps], [s["loss"] for s in steps], alpha=0.4, label="train (step)")
    ep = [h for h in history if "train_loss" in h]
    if ep:
        axes[0].plot([h["step"] for h in ep], [h["train_loss"] for h in ep], "o-", label="train (epoch mean)")
    axes[0].set(xlabel="optimizer step", ylabel="CTC loss", title="Loss")
    axes[0].legend()
    ev = [h for h in history if h.get("dev_wer") is not None]
    axes[1].plot([h["epoch"] for h in ev], [h["dev_wer"] for h in ev], "o-", color="C2")
    axes[1].set(xlabel="epoch", ylabel="WER (%)", title="Dev WER")
    if steps:
        axes[2].plot([s["step"] for s in steps], [s["lr"] for s in steps], color="C3")
    axes[2].set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate")
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(fig, path)
