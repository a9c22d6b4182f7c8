"""Parse, build, train, test, close: the body of `launch/teacher.py` and `launch/student.py`.

    accelerate launch launch/teacher.py                       # built-in synthetic corpus, CPU or one GPU
    accelerate launch launch/student.py --teacher_checkpoint runs/teacher/best_model.pth

The recipe chooses the data (a prepared folder, or the built-in corpus prepared once into the cache), the model
(`cfg.model`), the loss (the teacher's CTC, or a `setup` hook's: the student's distillation), the Accelerator and
the trackers; `cslr.trainer.Trainer` runs the loop; the best model is then scored on test.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import broadcast_object_list, set_seed

from cslr.datasets.pipeline import build_loader
from cslr.datasets.synthetic import cached_corpus
from cslr.datasets.vocab import Vocabulary
from cslr.datasets.writer import load_manifest
from cslr.eval.evaluate import evaluate_loader, split_coverage
from cslr.eval.lm import fusion_weights, load_lm
from cslr.eval.wer import score, write_ctm
from cslr.io import atomic_write_bytes, atomic_write_json
from cslr.models.checkpoint import build_model, load_pretrained_backbone, model_from_checkpoint
from cslr.trainer.checkpoint import CheckpointError, find_resume, list_checkpoints
from cslr.trainer.config import TrainConfig, build_arg_parser, fusion_flags, plain_dict, resolve, save_yaml
from cslr.trainer.report import flat_config, setup_logging, wandb_mode_note
from cslr.trainer.runtime import bf16_supported, make_accelerator, shutdown_distributed
from cslr.trainer.syncbn import convert_sync_batchnorm
from cslr.trainer.trainer import Trainer

logger = logging.getLogger("cslr")


@dataclass
class LossSetup:
    """What a `setup` hook gives the recipe: the loss (None: the teacher's CTC) and the input streams the loss
    reads from the batch besides the model's own (an online KD teacher's)."""

    loss_fn: Callable | None = None
    extra_streams: tuple[str, ...] = ()


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
    except OSError as e:  # a full disk, a vanished mount: the message names the file
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutdown_distributed()


def accelerator_for(cfg: TrainConfig):
    """The run's Accelerator: accumulation, mixed precision (`--use_amp`: bf16 where supported, else fp16 with
    loss scaling), trackers chosen by `report_to`, TensorBoard under the output folder."""
    mp = cfg.run.mixed_precision or None
    if mp is None and cfg.run.use_amp:
        mp = "bf16" if bf16_supported() else "fp16"
    log_with = {"all": ["wandb", "tensorboard"], "none": None}.get(cfg.run.report_to, [cfg.run.report_to])
    return make_accelerator(cfg.optim.accumulation_steps, mp, log_with, project_dir=cfg.run.output_dir)


def prepare_data(cfg: TrainConfig, accelerator) -> Path:
    """The data folder: `data`, or (empty) the built-in synthetic corpus, prepared once into the cache by the
    main process while the others wait."""
    if cfg.data.data:
        path = Path(cfg.data.data)
        load_manifest(path)  # clear error if missing or not prepared
        return path
    preset = cfg.run.synthetic_preset
    if accelerator.is_main_process:
        logger.info("built-in synthetic '%s' corpus (prepared into the cache once)", preset)
        cached_corpus(preset, seed=0)
    accelerator.wait_for_everyone()
    return cached_corpus(preset, seed=0)  # prepared by now: only its path


def run_training(cfg: TrainConfig, setup=None) -> int:
    """Train, then test the best model.

    `setup(cfg, accelerator, model, vocab) -> LossSetup` runs after the model is built (before the data and the
    Trainer): the student's distillation plugs in here. The config is completed once, before anything is saved:
    the data folder, and the data's modalities = the model's streams + the loss's extra streams.
    """
    wall0 = time.time()
    acc = accelerator_for(cfg)
    out = Path(cfg.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    setup_logging(out, acc.is_main_process)
    set_seed(cfg.run.seed)
    data_dir = prepare_data(cfg, acc)
    manifest = load_manifest(data_dir)
    vocab = Vocabulary.load(data_dir / "vocab.txt")
    protocol = cfg.run.protocol or manifest.get("protocol", "phoenix2014")
    load_fusion(cfg, vocab, protocol)  # a bad --lm fails now, not after training
    model, meta = build_model(cfg.model, len(vocab))
    if cfg.model.pretrained:
        n = load_pretrained_backbone(model, cfg.model.pretrained)  # an error for a model without such a backbone
        logger.info("loaded %d backbone tensors from %s", n, cfg.model.pretrained)
    hook = setup(cfg, acc, model, vocab) if setup is not None else LossSetup()
    model = sync_batchnorm(cfg, acc, model)
    need = set(model.cfg.streams) | set(hook.extra_streams)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, data=str(data_dir), modalities=tuple(m for m in ("rgb", "pose") if m in need)))
    missing = [m for m in cfg.data.modalities if m not in manifest.get("modalities", [])]
    if missing:
        raise ValueError(f"{data_dir}: the data has no {missing} (modalities {manifest.get('modalities')}); "
                         f"choose --modality accordingly")
    if acc.is_main_process:
        save_yaml(cfg, out / "config.yaml")
    trainer = Trainer(cfg, acc, model, vocab, protocol, meta, started_at=wall0, loss_fn=hook.loss_fn)
    existing = list_checkpoints(trainer.ckpt_dir)
    if existing and not cfg.run.resume:
        # A fresh run here would overwrite and prune another run's checkpoints: nothing may be lost silently.
        raise ValueError(f"{out} already holds checkpoints of a run ({existing[-1].name}): continue it with "
                         "--resume auto, or choose another --output_dir")
    resume = choose_resume(cfg.run.resume, trainer.ckpt_dir, acc)
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
                    trainer.state.global_step)
        acc.end_training()
        return 0
    test = None
    if "test" in manifest["splits"] and (out / "best_model.pth").is_file():
        test = test_best(cfg, acc, trainer, vocab, protocol)
    if acc.is_main_process:
        res = write_results(out / "results.json", trainer, test)
        logger.info("results: best dev WER %s%% (epoch %s), test WER %s%%, %.0f s, %.1f samples/s -> %s",
                    _fmt(res["best_dev_wer"]), res["best_epoch"], _fmt(res["test_wer"]), res["wall_time_s"],
                    res["samples_per_s"] or 0.0, out / "results.json")
        # best dev WER, its epoch, test WER and best_model.pth (by reference) on the trackers
        trainer.dashboard.log_summary(res, out / "best_model.pth", trainer.state.global_step)
    # the ranks leave together: one tearing its gloo group down while the main process still writes the results
    # aborted it at exit now and then ("terminate called without an active exception", the DeepSpeed KD test)
    acc.wait_for_everyone()
    acc.end_training()
    return 0


def sync_batchnorm(cfg: TrainConfig, acc, model: torch.nn.Module) -> torch.nn.Module:
    """`--sync_bn`: the model's BatchNorm layers synchronised across the data-parallel ranks (before prepare)."""
    if not cfg.run.sync_bn:
        return model
    if acc.num_processes == 1:
        logger.info("--sync_bn: one process, BatchNorm already sees the whole batch")
        return model
    n = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    logger.info("--sync_bn: %d BatchNorm layers synchronised over %d ranks", n, acc.num_processes)
    return convert_sync_batchnorm(model, acc.device)


def choose_resume(resume: str, ckpt_dir: Path, acc) -> Path | None:
    """The checkpoint to resume from, validated (sizes and sha256) by the main process only and handed to every
    rank, so that all ranks load the same one; a rank whose validation raised stops them all."""
    choice: list = [None]
    if acc.is_main_process:
        try:
            found = find_resume(resume, ckpt_dir)
            choice = [("ok", str(found) if found else None)]
        except (FileNotFoundError, ValueError) as e:
            choice = [("error", str(e))]
    if acc.num_processes > 1:
        broadcast_object_list(choice)
    kind, value = choice[0]
    if kind == "error":
        raise CheckpointError(value)
    return Path(value) if value else None


def test_best(cfg: TrainConfig, acc, trainer: Trainer, vocab: Vocabulary, protocol: str) -> dict:
    """Score `best_model.pth` on the test split with beam search; writes test_hyp.ctm -> the WER breakdown."""
    out = Path(cfg.run.output_dir)
    acc.wait_for_everyone()
    best_model, _, _ = model_from_checkpoint(out / "best_model.pth")
    best_model.to(acc.device)
    loader = build_loader(cfg.data, "test", vocab, train=False, rank=acc.process_index, world_size=acc.num_processes)
    lm, (lm_weight, word_bonus) = load_fusion(cfg, vocab, protocol)
    hyps, refs = evaluate_loader(acc, best_model, loader, vocab, protocol, cfg.run.beam_width, trainer.forward,
                                 desc="test (beam)", lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
    coverage = split_coverage(acc, loader, hyps)
    trainer.log_unknown("test", loader)
    coverage.check(cfg.run.allow_incomplete_eval)
    if not coverage.complete:
        logger.warning("test WER over an INCOMPLETE test split: %s", coverage.text())
    result = score(hyps, refs, protocol=protocol)
    test = {**result.as_dict(), "coverage": coverage.as_dict(),
            "lm": {"path": cfg.run.lm, "lm_weight": lm_weight, "word_bonus": word_bonus} if lm is not None else None}
    if acc.is_main_process:
        write_ctm(out / "test_hyp.ctm", hyps)
        logger.info("Test WER (best model, epoch %s, beam %d%s): %.2f%% (S %d, D %d, I %d, N %d; %s)\n%s",
                    trainer.state.best_epoch, cfg.run.beam_width,
                    f", LM {cfg.run.lm} weight {lm_weight:g} bonus {word_bonus:g}" if lm is not None else "", test["wer"], test["sub"], test["dele"],
                    test["ins"], test["num_ref_words"], coverage.text(), result.format_table())
    # test/wer, S/D/I, per-signer WER and the tables of these hypotheses on the trackers (main process)
    trainer.dashboard.log_evaluation("test", hyps, refs, result, protocol, trainer.state.global_step)
    return test


def load_fusion(cfg: TrainConfig, vocab: Vocabulary, protocol: str):
    """The --lm of the run and its fusion weights (the flags, else those tuned beside it) -> (lm or None, (a, b));
    an LM that cannot be read, has no weights or does not fit the vocabulary is an error naming the file."""
    if not cfg.run.lm:
        return None, (0.0, 0.0)
    lm = load_lm(cfg.run.lm)
    weights = fusion_weights(lm, *fusion_flags(cfg.run))
    lm.bind(vocab, protocol)  # checks the vocabulary now rather than after training
    return lm, weights


def write_results(path: Path, trainer: Trainer, test: dict | None) -> dict:
    """results.json; `wall_time_s` covers the whole run, resumes included (up to each one's last checkpoint)."""
    wall_time_s = trainer.wall_time()
    st = trainer.state
    results = {
        "best_epoch": st.best_epoch, "best_dev_wer": st.best_dev_wer,
        "test_wer": test["wer"] if test else None, "test_sub": test["sub"] if test else None,
        "test_del": test["dele"] if test else None, "test_ins": test["ins"] if test else None,
        "test_num_ref_words": test["num_ref_words"] if test else None, "test_lm": test["lm"] if test else None,
        "test_per_signer": test["per_signer"] if test else None,
        "epochs_run": len(st.history), "global_steps": st.global_step, "wall_time_s": wall_time_s,
        "train_time_s": st.train_time_s, "num_parameters": trainer.num_parameters,
        "samples_per_s": st.samples_seen / st.train_time_s if st.train_time_s > 0 else None,
        "test_coverage": test["coverage"] if test else None, "unknown_glosses": st.unknown_glosses,
        "nonfinite_steps_skipped": st.nonfinite_total, "skipped_samples": st.skipped,
        "stopped_early": st.stopped_early, "world_size": trainer.acc.num_processes,
        "mixed_precision": str(trainer.acc.mixed_precision), "history": st.history,
    }
    atomic_write_json(path, results)
    return results


def init_trackers(cfg: TrainConfig, accelerator, trainer: Trainer) -> None:
    """W&B and/or TensorBoard; one W&B run across resumes and Slurm requeues (its id lives in the output folder)."""
    if cfg.run.report_to == "none":
        return
    if cfg.run.report_to in ("wandb", "all"):
        note = wandb_mode_note()
        if note and accelerator.is_main_process:
            logger.info(note)
    out = Path(cfg.run.output_dir)
    id_file = out / "wandb_run_id.txt"
    run_id = None
    if accelerator.is_main_process and cfg.run.report_to in ("wandb", "all"):
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)  # W&B run ids are short lowercase alphanumerics
            atomic_write_bytes(id_file, (run_id + "\n").encode())
    init_kwargs = {"wandb": {"dir": str(out), "id": run_id, "resume": "allow", "name": cfg.run.run_name or out.name}}
    accelerator.init_trackers(cfg.run.wandb_project, config=flat_config(plain_dict(cfg)), init_kwargs=init_kwargs)
    trainer.state.wandb_run_id = run_id


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _device_text(acc) -> str:
    """"cuda:0", or "cpu (N threads per process)"."""
    return f"cpu ({torch.get_num_threads()} threads per process)" if acc.device.type == "cpu" else str(acc.device)
