"""Parse, build, train, test, close: the body of `launch/teacher.py` (and of the student entry point)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest

from .checkpoint import find_resume, list_checkpoints, load_portable
from .config import TrainConfig, build_arg_parser, resolve
from .report import setup_logging

logger = logging.getLogger("cslr")


def build_model(cfg_model, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The model named in the config + the plain metadata needed to rebuild it from `best_model.pth`."""
    from cslr.models.registry import build_model as _build

    kwargs = {"modality": cfg_model.modality, "dropout": cfg_model.dropout}
    if cfg_model.arch.startswith("student"):
        # aux_weight 0: no auxiliary heads at all (parameters without a gradient would stop DDP)
        kwargs["aux_heads"] = cfg_model.aux_weight > 0
    model = _build(cfg_model.arch, num_classes=num_classes, **kwargs)
    return model, {"model_name": cfg_model.arch, "model_kwargs": kwargs, "num_classes": num_classes}


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Vocabulary, dict]:
    """Rebuild a model from `best_model.pth` (safe load), in eval mode, with its vocabulary."""
    from cslr.models.registry import build_model as _build

    ck = load_portable(path)
    model = _build(ck["model_name"], num_classes=ck["num_classes"], **ck["model_kwargs"])
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing and all(k.startswith("aux_heads.") for k in missing) and getattr(model.cfg, "aux_heads", False):
        # A student saved before it had auxiliary heads: they only run in training, inference does not need them.
        model.aux_heads = torch.nn.ModuleDict()
        model.cfg.aux_heads, missing = False, []
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match model {ck['model_name']} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()
    return model, Vocabulary(ck["vocab"]), ck


def shutdown_distributed() -> None:
    """Tear the process group down before the interpreter does: gloo's threads, destroyed at exit while a peer
    rank is still leaving, can abort a rank ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def train_main(argv: list[str] | None, description: str, default_config: str | None, setup=None) -> int:
    """Parse flags over the YAML config and train; `setup` as in `run_training`. Returns the exit code."""
    parser = build_arg_parser(description, default_config)
    args = parser.parse_args(argv)
    try:
        cfg = resolve(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))  # exit 2 with usage
    try:
        return run_training(cfg, setup)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()


def run_training(cfg: TrainConfig, setup=None) -> int:
    """Train, then test the best model. `setup(cfg, accelerator, model, vocab) -> loss_fn | None` runs after the
    model is built (before the data and the Trainer): the student's distillation plugs in here."""
    from accelerate.utils import set_seed

    from .trainer import Trainer, init_trackers, make_accelerator, resolve_data, save_run_config, write_results

    wall0 = time.time()
    acc = make_accelerator(cfg)
    out = Path(cfg.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    setup_logging(out, acc.is_main_process)
    set_seed(cfg.run.seed)
    data_dir = resolve_data(cfg, acc)
    manifest = load_manifest(data_dir)
    vocab = Vocabulary.load(data_dir / "vocab.txt")
    protocol = cfg.run.protocol or manifest.get("protocol", "phoenix2014")
    cfg.data.modalities = tuple(cfg.model.modality.split("+"))
    model, meta = build_model(cfg.model, len(vocab))
    loss_fn = setup(cfg, acc, model, vocab) if setup is not None else None  # may add modalities (a KD teacher's)
    missing = [m for m in cfg.data.modalities if m not in manifest.get("modalities", [])]
    if missing:
        raise ValueError(f"{data_dir}: the data has no {missing} (modalities {manifest.get('modalities')}); "
                         f"choose --modality accordingly")
    save_run_config(cfg, acc)
    trainer = Trainer(cfg, acc, model, vocab, protocol, meta, started_at=wall0, loss_fn=loss_fn)
    existing = list_checkpoints(trainer.ckpt_dir)
    if existing and not cfg.run.resume:
        # A fresh run here would overwrite and prune another run's checkpoints: nothing may be lost silently.
        raise ValueError(f"{out} already holds checkpoints of a run ({existing[-1].name}): continue it with "
                         "--resume auto, or choose another --output_dir")
    resume = find_resume(cfg.run.resume, trainer.ckpt_dir)
    if resume is not None:
        trainer.load(resume)
    elif cfg.run.resume == "auto":
        logger.info("--resume auto: no complete checkpoint in %s, starting fresh", trainer.ckpt_dir)
    init_trackers(cfg, acc, trainer)
    trainer.install_signal_handlers()
    logger.info("%s: %.2f M parameters, %d processes (%s) on %s, mixed precision %s, %d train batches/epoch/rank, "
                "%d optimizer steps/epoch", meta["model_name"], trainer.num_parameters / 1e6, acc.num_processes,
                acc.distributed_type.name, _device_text(acc), acc.mixed_precision, len(trainer.train_loader),
                trainer.steps_per_epoch)
    status = trainer.train()
    if status["interrupted"]:
        logger.info("stopped on a signal after step %d; checkpoint saved, continue with --resume auto",
                    trainer.state["global_step"])
        acc.end_training()
        return 0
    test = None
    best = out / "best_model.pth"
    if "test" in manifest["splits"] and best.is_file():
        acc.wait_for_everyone()
        best_model, _, _ = model_from_checkpoint(best)
        best_model.to(acc.device)
        from cslr.datasets.pipeline import build_loader

        from .trainer import evaluate_loader
        from .wer import score, write_ctm

        loader = build_loader(cfg.data, "test", vocab, train=False, rank=acc.process_index, world_size=acc.num_processes)
        hyps, refs = evaluate_loader(acc, best_model, loader, vocab, protocol, cfg.run.beam_width, trainer.forward,
                                     desc="test (beam)")
        result = score(hyps, refs, protocol=protocol)
        test = result.as_dict()
        if acc.is_main_process:
            write_ctm(out / "test_hyp.ctm", hyps)
            logger.info("Test WER (best model, epoch %s, beam %d): %.2f%% (S %d, D %d, I %d, N %d)\n%s",
                        trainer.state["best_epoch"], cfg.run.beam_width, test["wer"], test["sub"], test["dele"],
                        test["ins"], test["num_ref_words"], result.format_table())
        acc.log({"test/wer": test["wer"]}, step=trainer.state["global_step"])
    if acc.is_main_process:
        res = write_results(out / "results.json", trainer, test)
        logger.info("results: best dev WER %s%% (epoch %s), test WER %s%%, %.0f s, %.1f samples/s -> %s",
                    _fmt(res["best_dev_wer"]), res["best_epoch"], _fmt(res["test_wer"]), res["wall_time_s"],
                    res["samples_per_s"] or 0.0, out / "results.json")
    acc.end_training()
    return 0


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _device_text(acc) -> str:
    """"cuda:0", or "cpu (N threads per process)"."""
    return f"cpu ({torch.get_num_threads()} threads per process)" if acc.device.type == "cpu" else str(acc.device)
