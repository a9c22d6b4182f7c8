"""The training loop (Accelerate: one process, DDP, or DeepSpeed ZeRO), dev evaluation with the official WER.

    accelerate launch launch/teacher.py                                   # CPU or one GPU, built-in data
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml launch/teacher.py --data DIR
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/teacher.py   # 2-rank DDP on CPU

One `Trainer` with `train_step`, `evaluate`, `save`, `load`: extend by overriding a method.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import gather_object

from cslr.datasets.pipeline import build_loader
from cslr.datasets.vocab import Vocabulary
from cslr.eval.evaluate import evaluate_loader, split_coverage
from cslr.eval.forward import batch_to, model_forward
from cslr.eval.wer import score
from cslr.io import Progress
from cslr.models.checkpoint import save_portable

from . import checkpoint as ckpt
from .config import TrainConfig, plain_dict
from .dashboard import Dashboard, Throughput, peak_memory
from .losses import plain_loss
from .optim import build_optimizer, build_scheduler
from .report import plot_curves

logger = logging.getLogger("cslr")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainState:
    """Everything of a run that resumes besides what Accelerate saves (weights, optimizer, scheduler, scaler, RNG):
    the position (epoch, batch, step, loader), the best model so far, counters and the curves. Written as
    `trainer_state.json` into every checkpoint (plain JSON: nothing in it can run code)."""

    epoch: int = 0
    batches_done: int = 0            # micro-batches of `epoch` already trained
    global_step: int = 0             # optimizer steps
    best_dev_wer: float | None = None
    best_epoch: int | None = None
    evals_since_best: int = 0
    nonfinite_total: int = 0
    train_time_s: float = 0.0
    samples_seen: int = 0
    history: list = field(default_factory=list)   # one record per epoch
    steps: list = field(default_factory=list)     # a loss/lr record every 10 steps
    stopped_early: bool = False
    wandb_run_id: str | None = None
    skipped: dict = field(default_factory=dict)   # reason -> train samples skipped
    loader: dict | None = None       # the train loader's position inside `epoch`
    epoch_loss: list = field(default_factory=lambda: [0.0, 0.0])  # (sum, finite batches) of `epoch`, all ranks
    wall_time_s: float = 0.0
    unknown_glosses: dict = field(default_factory=dict)  # split -> gloss -> occurrences dropped (all epochs)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Fields of `state` replace this state's; fields an older checkpoint lacks keep their defaults."""
        for f in dataclasses.fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])


class Trainer:
    """Gets the model, the loss and the config from a recipe; builds the loaders, the optimizer and the schedule
    from the config's sections; owns the loop, dev evaluation and checkpoints."""

    def __init__(self, cfg: TrainConfig, accelerator, model: torch.nn.Module, vocab: Vocabulary, protocol: str,
                 model_meta: dict, loss_fn=None, started_at: float | None = None):
        self.cfg = cfg
        # Wall time of the whole run across resumes: the part before the loaded checkpoint + this process's.
        self._started_at = time.time() if started_at is None else started_at
        self._wall_before = 0.0
        self.acc = accelerator
        self.vocab = vocab
        self.protocol = protocol
        self.model_meta = model_meta  # plain info to rebuild the model from best_model.pth
        self.loss_fn = loss_fn or plain_loss(cfg.model.aux_weight)
        self.out = Path(cfg.run.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.num_parameters = sum(p.numel() for p in model.parameters())
        out_len = getattr(model, "output_length", None)

        def loader(split, train):
            return build_loader(cfg.data, split, vocab, train=train, rank=accelerator.process_index,
                                world_size=accelerator.num_processes, output_length=out_len)

        self.train_loader = loader("train", True)
        self.dev_loader = loader("dev", False)
        self.accum = cfg.optim.accumulation_steps
        # Optimizer steps per epoch: the same on every rank (the loader guarantees equal batch counts);
        # a remainder of fewer than `accum` batches is not used, so every step sees `accum` micro-batches.
        self.steps_per_epoch = max(1, len(self.train_loader) // self.accum)
        if self.acc.distributed_type.name == "DEEPSPEED":
            self._fill_deepspeed_auto()
        optimizer = build_optimizer(model, cfg.optim)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # Not registered with Accelerate (it would pickle it): its state is plain numbers in trainer_state.json.
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        self.state = TrainState()
        self._stop_signal = 0  # the signal number once SIGUSR1 / SIGTERM arrived
        self._consecutive_bad = 0      # non-finite losses in a row (all ranks agree)
        self._window_finite = False    # a finite micro-batch in the current accumulation window
        self._epoch_loss = [0.0, 0.0]  # (loss sum, finite batches) of this epoch on this rank
        self._epoch_unknown: dict = {}  # split -> unknown gloss occurrences in this epoch
        self.dashboard = Dashboard(accelerator, cfg.run.dashboard_rows, cfg.run.seed)  # tables for the trackers
        self._window = Throughput()    # since the last tracker values: samples, frames, tokens, data wait

    # ----------------------------------------------------------------------------------------- setup
    def _fill_deepspeed_auto(self) -> None:
        """The loader is not prepared by Accelerate, so fill the batch-dependent "auto" values ourselves."""
        ds = self.acc.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = self.cfg.data.batch_size
        if ds.get("train_batch_size", "auto") == "auto":
            ds["train_batch_size"] = self.cfg.data.batch_size * self.accum * self.acc.num_processes
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = self.cfg.optim.max_grad_norm

    def install_signal_handlers(self) -> None:
        """SIGUSR1 (Slurm's warning before the end) and SIGTERM: finish the step, save, exit for requeue."""
        def handler(signum, _frame):  # no logging here: a signal arriving mid-write would re-enter the stream
            self._stop_signal = signum

        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, handler)

    # ----------------------------------------------------------------------------------------- state
    def wall_time(self) -> float:
        return self._wall_before + time.time() - self._started_at

    def save(self, tag: str = "") -> Path:
        """A checkpoint of every rank (collective); kept for a resume in the middle of this epoch too."""
        st = self.state
        st.loader = self.train_loader.state_dict()
        st.wall_time_s = self.wall_time()
        st.epoch_loss = self._sum_ranks(self._epoch_loss)
        name = ckpt.checkpoint_name(st.epoch, st.global_step)
        state = {**st.state_dict(), "scheduler": self.scheduler.state_dict(), "batch": self.batch_geometry()}
        path = ckpt.save_checkpoint(self.acc, self.ckpt_dir, name, state, self.cfg.run.keep_last)
        logger.info("saved checkpoint %s%s", path, f" ({tag})" if tag else "")
        return path

    def batch_geometry(self) -> dict:
        """Samples per optimizer step: per rank x ranks x accumulation (saved with each checkpoint)."""
        per_rank, ranks = self.cfg.data.batch_size, self.acc.num_processes
        return {"per_rank": per_rank, "ranks": ranks, "accumulation": self.accum,
                "global": per_rank * ranks * self.accum}

    def load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(self.acc, self.model, self.optimizer, path)
        sched = state.pop("scheduler", None)
        if not isinstance(sched, dict) or "last_epoch" not in sched:
            raise ckpt.CheckpointError(f"{path / ckpt.STATE_FILE}: no learning-rate schedule state")
        self.scheduler.load_state_dict(sched)
        saved = state.pop("batch", None)
        now = self.batch_geometry()
        if isinstance(saved, dict) and saved.get("global") != now["global"]:
            logger.warning(
                "%s: the global batch changes on resume, %s -> %s (per rank x ranks x accumulation: %s x %s x %s -> "
                "%s x %s x %s). The learning rate stays %g: optimisation is not the run it continues. To keep it, "
                "hold the global batch (--accumulation_steps) or scale the learning rate with it (linear rule).",
                path, saved.get("global"), now["global"], saved.get("per_rank"), saved.get("ranks"),
                saved.get("accumulation"), now["per_rank"], now["ranks"], now["accumulation"],
                self.cfg.optim.learning_rate)
        self.state.load_state_dict(state)
        self._wall_before = float(self.state.wall_time_s)
        self.train_loader.load_state_dict(self.state.loader)
        self.acc.step = 0  # checkpoints are taken at optimizer-step boundaries
        logger.info("resumed from %s (epoch %d, batch %d, step %d)", path, self.state.epoch,
                    self.state.batches_done, self.state.global_step)

    # ----------------------------------------------------------------------------------------- batches
    def to_device(self, batch: dict) -> dict:
        return batch_to(batch, self.acc.device)

    def forward(self, model, batch: dict) -> dict:
        return model_forward(model, batch)

    def _sum_ranks(self, values: list[float]) -> list[float]:
        """Sum per-rank scalars in one small collective (finite-loss and stop flags, loss sums)."""
        t = torch.tensor(values, dtype=torch.float64 if self.acc.device.type == "cpu" else torch.float32,
                         device=self.acc.device)
        if self.acc.num_processes > 1:
            t = self.acc.reduce(t, reduction="sum")
        return t.tolist()

    def train_step(self, batch: dict) -> dict:
        """One micro-batch: forward, loss, (skipped-if-non-finite) backward, and at the boundary an optimizer step.

        Returns loss (NaN when skipped), finite, stop, grad_norm (None off the boundary or without clipping),
        parts (the loss function's parts as floats: ctc, ctc_<head>, kd, ...) and tokens.
        """
        batch = self.to_device(batch)
        # BatchNorm running statistics are updated by the forward itself: keep a copy (small) so that a batch
        # whose loss turns out non-finite leaves no trace in the model, buffers included.
        buffers = list(self.model.buffers())
        saved = [b.detach().clone() for b in buffers]
        with self.acc.accumulate(self.model):
            out = self.forward(self.model, batch)
            loss, parts = self.loss_fn(out, batch)
            n_finite, n_stop = self._sum_ranks([float(torch.isfinite(loss.detach()).item()), float(self._stop_signal)])
            finite = n_finite >= self.acc.num_processes  # all ranks finite
            stop = n_stop > 0  # any rank signalled
            if not finite:
                # Every rank skips together: a zero loss still runs backward so DDP/DeepSpeed collectives match.
                self.state.nonfinite_total += 1
                self._consecutive_bad += 1
                with torch.no_grad():
                    for b, v in zip(buffers, saved):
                        b.copy_(v)
                loss = sum((p * 0).sum() for p in self.model.parameters() if p.requires_grad)
            else:
                self._consecutive_bad = 0
                self._window_finite = True
            self.acc.backward(loss)
            grad_norm = None
            if self.acc.sync_gradients:
                if self.cfg.optim.max_grad_norm > 0:
                    grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
                if self._window_finite:  # at least one finite micro-batch in this accumulation window
                    self.optimizer.step()
                    self.scheduler.step()
                self._window_finite = False
                self.optimizer.zero_grad(set_to_none=True)
        if self._consecutive_bad > self.cfg.run.max_bad_steps:
            raise NonFiniteLossError(
                f"{self._consecutive_bad} consecutive non-finite losses (limit --max_bad_steps "
                f"{self.cfg.run.max_bad_steps}); stopping. Checkpoints in {self.ckpt_dir} are intact: lower the "
                "learning rate or check the data, then --resume auto")
        parts = {k: float(v) for k, v in parts.items()}
        return {"loss": float(loss.detach()) if finite else float("nan"), "finite": finite, "stop": stop,
                "grad_norm": None if grad_norm is None else float(grad_norm), "parts": parts,
                "tokens": int(out["lengths"].sum())}  # output frames of the CTC head

    # ----------------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Epochs until `epochs` (or `max_steps`, or early stopping): train, evaluate, record, checkpoint.
        Returns {"interrupted": True} after a signal (a checkpoint was saved), else {"interrupted": False}."""
        cfg, st = self.cfg, self.state
        self._consecutive_bad, self._window_finite = 0, False
        self._t_start, self._train_time0 = time.time(), st.train_time_s
        epoch = st.epoch
        while epoch < cfg.optim.epochs and not st.stopped_early:
            t_epoch = time.time()
            ended = self.train_epoch(epoch)
            st.train_time_s = self._train_time0 + time.time() - self._t_start
            if ended["interrupted"]:
                self.save("signal")
                return {"interrupted": True}
            last = epoch + 1 == cfg.optim.epochs or bool(cfg.run.max_steps and st.global_step >= cfg.run.max_steps)
            self.end_epoch(epoch, ended, time.time() - t_epoch, last)
            epoch += 1
            if ended["complete"]:
                st.epoch, st.batches_done, st.loader = epoch, 0, None
            if epoch % cfg.run.save_every == 0 or epoch == cfg.optim.epochs or st.stopped_early or last:
                self.save("epoch end")
            if last:
                break
        return {"interrupted": False}

    def train_epoch(self, epoch: int) -> dict:
        """The batches of one epoch (from a mid-epoch checkpoint's position when resuming into it) ->
        {"interrupted", "complete", "wait_s", "loop_s"}: a signal, all batches done, time blocked on the loader."""
        cfg, acc, st = self.cfg, self.acc, self.state
        self.train_loader.set_epoch(epoch)
        # A resumed epoch carries the part before the checkpoint (summed over ranks) on the main process, so the
        # epoch's mean loss is the uninterrupted one.
        self._epoch_loss = [0.0, 0.0]
        if st.loader and st.loader["epoch"] == epoch and st.batches_done > 0:
            self.train_loader.load_state_dict(st.loader)
            if acc.is_main_process:
                self._epoch_loss = [float(v) for v in st.epoch_loss]
        else:
            st.batches_done = 0
        self.model.train()
        n_batches = self.steps_per_epoch * self.accum
        # tqdm on a terminal; in a log file (Slurm) a plain line every progress_every_s s / _steps batches
        bar = Progress(n_batches, st.batches_done, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batches",
                       enabled=acc.is_main_process, every_s=cfg.run.progress_every_s,
                       every_n=cfg.run.progress_every_steps)
        interrupted = False
        # Time blocked on the loader vs the whole loop: the fraction says whether the loader feeds the model.
        wait_s, t_loop = 0.0, time.perf_counter()
        t_ready = t_loop
        self._window, epoch_tp = Throughput(), Throughput()
        for batch in self.train_loader:
            waited = time.perf_counter() - t_ready
            wait_s += waited
            if st.batches_done >= n_batches:
                break
            res = self.train_step(batch)
            st.batches_done += 1
            n, b = acc.num_processes, int(batch["lengths"].shape[0])
            st.samples_seen += b * n
            for tp in (self._window, epoch_tp):  # all ranks: this rank's work times the ranks
                tp.add(b * n, int(batch["lengths"].sum()) * n, res["tokens"] * n, waited)
            if res["finite"]:
                self._epoch_loss[0] += res["loss"]
                self._epoch_loss[1] += 1
            if acc.sync_gradients:
                st.global_step += 1
                self.after_step(epoch, res, bar, st.batches_done / n_batches)  # sets the progress fields, so
                bar.update(1)  # a line this update prints shows this step's loss and lr
                if res["stop"]:
                    logger.warning("%s: saving a checkpoint after step %d and exiting",
                                   f"received signal {int(self._stop_signal)}" if self._stop_signal
                                   else "another rank received a stop signal", st.global_step)
                    interrupted = True
                    break
                if cfg.run.save_every_steps and st.global_step % cfg.run.save_every_steps == 0:
                    st.train_time_s = self._train_time0 + time.time() - self._t_start
                    self.save("periodic")
                if cfg.run.max_steps and st.global_step >= cfg.run.max_steps:
                    break
            else:  # a micro-batch inside an accumulation window
                bar.update(1)
            t_ready = time.perf_counter()
        loop_s = time.perf_counter() - t_loop
        bar.close()
        self._log_skips(epoch)
        return {"interrupted": interrupted, "complete": st.batches_done >= n_batches, "wait_s": wait_s,
                "loop_s": loop_s, "throughput": epoch_tp.rates("epoch")}

    def after_step(self, epoch: int, res: dict, bar, epoch_fraction: float) -> None:
        """After each optimizer step: the progress fields, and every `log_every_steps` steps a loss/lr record and
        tracker values: loss and its parts (CTC, each auxiliary head's, KD's KL), lr, gradient norm, throughput
        and data wait since the last values, peak memory, skipped batches and samples."""
        st = self.state
        lr = self.scheduler.get_last_lr()[0]
        bar.set_fields(loss=f"{res['loss']:.3f}", lr=f"{lr:.2e}")
        if st.global_step % self.cfg.run.log_every_steps == 0 or st.global_step == 1:
            st.steps.append({"step": st.global_step, "loss": res["loss"], "lr": lr})
            log = {"train/loss": res["loss"], "train/lr": lr, "train/epoch": epoch + epoch_fraction,
                   **{f"train/loss_{k}": v for k, v in res["parts"].items() if math.isfinite(v)},
                   **self._window.rates("train"), **peak_memory(self.acc.device),
                   "train/skipped_batches": st.nonfinite_total,
                   "train/skipped_samples": sum(st.skipped.values()) +
                   sum((getattr(self.train_loader, "skip_counts", None) or {}).values())}
            if res["grad_norm"] is not None and math.isfinite(res["grad_norm"]):
                log["train/grad_norm"] = res["grad_norm"]
            self.acc.log(log, step=st.global_step)
            self._window = Throughput()

    def end_epoch(self, epoch: int, ended: dict, epoch_time_s: float, last: bool) -> None:
        """Mean loss over ranks, dev WER (every `eval_every` epochs and at the end), the epoch record, the log line,
        the trackers and the curves."""
        cfg, acc, st = self.cfg, self.acc, self.state
        total, count = self._sum_ranks(self._epoch_loss)
        mean_loss = total / count if count else float("nan")
        wait_s, loop_s = self._sum_ranks([ended["wait_s"], ended["loop_s"]])
        rec = {"epoch": epoch + 1, "step": st.global_step, "train_loss": mean_loss,
               "epoch_time_s": epoch_time_s, "data_wait_s": wait_s,
               "data_wait_fraction": wait_s / loop_s if loop_s > 0 else None, "dev_wer": None}
        if (epoch + 1) % cfg.run.eval_every == 0 or last:
            res = self.evaluate_dev(beam_width=0)
            cov = res["coverage"]
            rec.update(dev_wer=res["wer"], dev_sub=res["sub"], dev_del=res["dele"], dev_ins=res["ins"],
                       dev_videos=cov.decoded, dev_videos_listed=cov.listed, dev_skipped=[list(x) for x in cov.skipped])
            if cov.complete:
                self._track_best(epoch, res)
            else:  # allowed by --allow_incomplete_eval: scored, but never compared with complete evaluations
                logger.warning("epoch %d: dev WER %.2f%% over an INCOMPLETE dev split (%s); not considered for the "
                               "best model", epoch + 1, res["wer"], cov.text())
        rec["unknown_glosses"], self._epoch_unknown = dict(self._epoch_unknown), {}
        if st.history and st.history[-1]["epoch"] == rec["epoch"]:
            st.history.pop()  # the record of this epoch's part before a --max_steps stop and resume
        st.history.append(rec)
        acc.log({**ended.get("throughput", {}), **peak_memory(acc.device), "epoch/train_loss": mean_loss,
                 "epoch/data_wait_fraction": rec["data_wait_fraction"] or 0.0,
                 "epoch/skipped_batches": st.nonfinite_total,
                 **({"epoch/dev_wer": rec["dev_wer"]} if rec["dev_wer"] is not None else {})},
                step=st.global_step)
        if rec["dev_wer"] is not None:  # tables of the hypotheses just decoded (main process; no extra pass)
            self.dashboard.log_evaluation("dev", res["hyps"], res["refs"], res["result"], self.protocol,
                                          st.global_step)
        wer_s = (f"{rec['dev_wer']:.1f}% ({rec['dev_videos']} of {rec['dev_videos_listed']} videos)"
                 if rec["dev_wer"] is not None else "-")
        logger.info("Epoch %d | Val WER: %s | Loss: %.4f | step %d | %.0fs | data wait %.1f%%", epoch + 1, wer_s,
                    mean_loss, st.global_step, rec["epoch_time_s"], 100 * (rec["data_wait_fraction"] or 0.0))
        if acc.is_main_process:
            plot_curves(st.history, st.steps, self.out / "training_curves.png")

    def _log_skips(self, epoch: int) -> None:
        counts = dict(getattr(self.train_loader, "skip_counts", {}) or {})
        if counts:
            logger.warning("epoch %d: skipped train samples on rank %d: %s", epoch + 1, self.acc.process_index, counts)
            for k, v in counts.items():
                self.state.skipped[k] = self.state.skipped.get(k, 0) + v
        self.log_unknown("train", self.train_loader)

    def log_unknown(self, split: str, loader) -> None:
        """Glosses of `split` not in the vocabulary (dropped from the targets) in this pass over it, summed over
        ranks: a warning, the epoch record (`unknown_glosses`) and the run's totals in results.json."""
        counts = collections.Counter(dict(getattr(loader, "unknown_glosses", {}) or {}))
        if self.acc.num_processes > 1:
            counts = sum((collections.Counter(c) for c in gather_object([dict(counts)])), collections.Counter())
        self._epoch_unknown[split] = sum(counts.values())
        if counts:
            logger.warning("%s: %d occurrences of %d glosses not in the vocabulary (dropped from the targets): %s",
                           split, sum(counts.values()), len(counts), dict(counts.most_common(10)))
            total = self.state.unknown_glosses.setdefault(split, {})
            for g, n in counts.items():
                total[g] = total.get(g, 0) + n

    def _track_best(self, epoch: int, res: dict) -> None:
        st = self.state
        if st.best_dev_wer is None or res["wer"] < st.best_dev_wer:
            st.best_dev_wer, st.best_epoch, st.evals_since_best = res["wer"], epoch + 1, 0
            self.save_best(epoch, res)
        else:
            st.evals_since_best += 1
            if self.cfg.run.patience and st.evals_since_best >= self.cfg.run.patience:
                st.stopped_early = True
                logger.info("early stopping: no dev WER improvement in %d evaluations", self.cfg.run.patience)

    def save_best(self, epoch: int, res: dict) -> None:
        state_dict = self.acc.get_state_dict(self.model)  # gathers ZeRO-3 shards; all ranks must call
        if self.acc.is_main_process:
            save_portable(self.out / "best_model.pth", state_dict, {
                "config": plain_dict(self.cfg), "vocab": list(self.vocab.glosses), **self.model_meta,
                "epoch": epoch + 1, "dev_wer": float(res["wer"]), "protocol": self.protocol,
            })
            logger.info("new best dev WER %.2f%% at epoch %d -> best_model.pth", res["wer"], epoch + 1)
        self.acc.wait_for_everyone()

    # ----------------------------------------------------------------------------------------- eval
    def evaluate_dev(self, beam_width: int = 0) -> dict:
        """WER over every dev sample across ranks (greedy, or beam search if beam_width > 1)."""
        model = self.acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        hyps, refs = evaluate_loader(self.acc, model, self.dev_loader, self.vocab, self.protocol, beam_width,
                                     self.forward, desc="eval dev")
        model.train(was_training)
        coverage = split_coverage(self.acc, self.dev_loader, hyps)
        self.log_unknown("dev", self.dev_loader)
        coverage.check(self.cfg.run.allow_incomplete_eval)
        result = score(hyps, refs, protocol=self.protocol)
        return {**result.as_dict(), "hyps": hyps, "refs": refs, "result": result, "coverage": coverage}
