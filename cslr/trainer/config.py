"""Run configuration: small dataclasses per component, composed into one run config.

A YAML file sets defaults section by section (`data:`, `model:`, `optim:`, `run:`, `kd:`); `--flag value` on the
command line overrides any leaf field by its name (`--batch_size 8` -> `data.batch_size`). Leaf names are
unique across sections so the flags stay flat, as in the original training script. The resolved config is
written to `output_dir/config.yaml` and into every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cslr.io import atomic_write_bytes
from cslr.datasets.pipeline import DataConfig
from cslr.eval.wer import PROTOCOLS
from cslr.models.registry import ModelConfig


@dataclass
class OptimConfig:
    optimizer: str = "adamw"        # adamw | adam | sgd
    learning_rate: float = 3e-4     # peak LR, reached after warmup
    weight_decay: float = 1e-4      # not applied to norms and biases
    momentum: float = 0.9           # sgd only
    epochs: int = 30
    warmup_epochs: float = 1.0      # linear warmup, then cosine annealing to min_lr_ratio * peak (per optimizer step)
    min_lr_ratio: float = 0.01
    max_grad_norm: float = 1.0      # 0 disables clipping
    accumulation_steps: int = 1


@dataclass
class RunConfig:
    output_dir: str = "runs/teacher"
    seed: int = 0
    mixed_precision: str = ""       # no | fp16 | bf16; empty: decided by use_amp (or the accelerate launch config)
    use_amp: bool = False           # bf16 where supported, else fp16 with loss scaling
    report_to: str = "all"          # wandb | tensorboard | all | none
    wandb_project: str = "cslr"
    run_name: str = ""
    patience: int = 0               # early stopping after this many evaluations without dev WER improvement (0: off)
    eval_every: int = 1             # epochs
    save_every: int = 1             # epochs
    save_every_steps: int = 0       # optimizer steps; 0: only at epoch ends
    keep_last: int = 2              # checkpoints kept in output_dir/checkpoints
    resume: str = ""                # auto | PATH to a checkpoint folder | empty: fresh start
    beam_width: int = 10            # final test evaluation (dev uses greedy decoding)
    max_bad_steps: int = 20         # consecutive non-finite losses before stopping with an error
    max_steps: int = 0              # stop after this many optimizer steps (0: no limit; tests and smoke runs)
    synthetic_preset: str = "small" # used when `data` is empty: the built-in corpus, prepared into the cache
    protocol: str = ""              # WER protocol; empty: from the data manifest
    lm: str = ""                    # gloss n-gram LM (ARPA, launch/train_lm.py) fused into the final test's beam search
    lm_weight: str = ""             # a number; empty: the weights launch/tune_lm.py wrote beside the LM (tuned on dev)
    word_bonus: str = ""            # a number; empty: as lm_weight
    allow_incomplete_eval: bool = False  # score dev/test even if some listed videos could not be read (never "best")
    log_every_steps: int = 10       # tracker scalars (loss parts, lr, grad norm, throughput, memory) every N steps
    progress_every_s: float = 30.0  # stdout not a terminal (a Slurm log): a plain progress line every this many s
    progress_every_steps: int = 0   # ... or every this many batches, whichever first (0: by time only)
    dashboard_rows: int = 20        # N of the trackers' worst-sentences, fixed-sample and substitution tables
    sync_bn: bool = False           # BatchNorm statistics over all ranks' batches (cslr/trainer/syncbn.py)


@dataclass
class KDConfig:
    """Knowledge distillation (launch/student.py; ignored by the teacher). Soft targets from `--soft_targets`
    (data section) when set, else from the teacher run alongside the student."""
    teacher_checkpoint: str = ""    # the teacher's best_model.pth (online targets; vocabulary check)
    alpha: float = 0.7              # loss = (1 - alpha) * CTC + alpha * T^2 * KL(teacher_T || student_T)
    temperature: float = 3.0        # T, applied to both teacher and student logits
    hint_weight: float = 0.0        # FitNets hint: student rgb features -> teacher pose-stream features (needs hint_dim)
    hand_shape_weight: float = 1.0  # --hand_crop students: each patch's hand shape -> the landmarks' (0: locator only)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    kd: KDConfig = field(default_factory=KDConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = ("data", "model", "optim", "run", "kd")
# Fields that follow another one rather than having their own flag: the data order is seeded by the run seed.
DERIVED = {("data", "seed"): ("run", "seed")}
# Fields the run fills in once it knows the model (no flag, no YAML key): the streams the loader reads are the
# model's own plus what its loss needs (an online KD teacher's).
RESOLVED = {("data", "modalities"): "the model's streams (--modality) and its loss's"}


def _leaf_fields(cfg) -> dict[str, tuple[str, dataclasses.Field]]:
    """flag name -> (section, field) over all sections; names must be unique."""
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            if (section, f.name) in DERIVED or (section, f.name) in RESOLVED:
                continue
            if f.name in out:
                raise AssertionError(f"config field {f.name} appears in two sections")
            out[f.name] = (section, f)
    return out


def _str2bool(v: str) -> bool:
    s = str(v).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def _coerce(value, default, where: str):
    """YAML value -> the type of the field's default, with a clear error."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _str2bool(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(default, float):
        return float(value)
    if isinstance(default, int) and isinstance(value, float):
        if value != int(value):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, str) and not isinstance(value, str):
        return str(value)
    return value


def apply_yaml(cfg: TrainConfig, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections {SECTIONS}")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ValueError(f"{path}: unknown section {section!r} (expected one of {SECTIONS})")
        sub = getattr(cfg, section)
        names = {f.name for f in dataclasses.fields(sub)}
        for k, v in (values or {}).items():
            if (section, k) in DERIVED:
                src = ".".join(DERIVED[(section, k)])
                raise ValueError(f"{path}: {section}.{k} follows {src}; set {src} instead")
            if (section, k) in RESOLVED:
                raise ValueError(f"{path}: {section}.{k} follows {RESOLVED[(section, k)]}; remove it")
            if k not in names:
                raise ValueError(f"{path}: unknown key {section}.{k}")
            setattr(sub, k, _coerce(v, getattr(sub, k), f"{path}: {section}.{k}"))


def build_arg_parser(description: str, default_config: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help="YAML config (defaults); flags override it")
    for name, (section, f) in _leaf_fields(TrainConfig()).items():
        default = getattr(getattr(TrainConfig(), section), name)
        kw: dict = {"default": None, "dest": name, "help": f"{section}.{name} (default {default!r})"}
        if isinstance(default, bool):
            kw.update(nargs="?", const=True, type=_str2bool)
        elif isinstance(default, tuple):
            kw.update(nargs="+", type=type(default[0]) if default else str)
        else:
            kw["type"] = type(default)
        parser.add_argument(f"--{name}", **kw)
    return parser


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- YAML (--config) <- flags."""
    cfg = TrainConfig()
    if args.config:
        apply_yaml(cfg, args.config)
    for name, (section, _) in _leaf_fields(cfg).items():
        v = getattr(args, name, None)
        if v is not None:
            sub = getattr(cfg, section)
            setattr(sub, name, tuple(v) if isinstance(getattr(sub, name), tuple) else v)
    for (sec, name), (src_sec, src_name) in DERIVED.items():
        setattr(getattr(cfg, sec), name, getattr(getattr(cfg, src_sec), src_name))
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Catch bad values before any process group or data is touched."""
    checks = [
        (cfg.optim.optimizer in ("adamw", "adam", "sgd"), f"--optimizer must be adamw, adam or sgd, not {cfg.optim.optimizer!r}"),
        (cfg.run.mixed_precision in ("", "no", "fp16", "bf16"), f"--mixed_precision must be no, fp16 or bf16, not {cfg.run.mixed_precision!r}"),
        (cfg.run.report_to in ("wandb", "tensorboard", "all", "none"), f"--report_to must be wandb, tensorboard, all or none, not {cfg.run.report_to!r}"),
        (cfg.model.modality in ("rgb", "pose", "rgb+pose"), f"--modality must be rgb, pose or rgb+pose, not {cfg.model.modality!r}"),
        (cfg.data.batch_size >= 1, "--batch_size must be >= 1"),
        (cfg.optim.accumulation_steps >= 1, "--accumulation_steps must be >= 1"),
        (cfg.optim.epochs >= 1, "--epochs must be >= 1"),
        (cfg.optim.learning_rate > 0, "--learning_rate must be > 0"),
        (0.0 <= cfg.model.dropout < 1.0, "--dropout must be in [0, 1)"),
        (cfg.optim.warmup_epochs >= 0, "--warmup_epochs must be >= 0"),
        (cfg.run.eval_every >= 1 and cfg.run.save_every >= 1, "--eval_every and --save_every must be >= 1"),
        (cfg.data.num_workers >= 0, "--num_workers must be >= 0"),
        (0.0 <= cfg.kd.alpha <= 1.0, "--alpha must be in [0, 1]"),
        (cfg.kd.temperature > 0, "--temperature must be > 0"),
        (cfg.kd.hint_weight >= 0, "--hint_weight must be >= 0"),
        (cfg.kd.hand_shape_weight >= 0, "--hand_shape_weight must be >= 0"),
        (cfg.model.hint_dim >= 0, "--hint_dim must be >= 0"),
        (0 <= cfg.model.hand_crop < cfg.data.image_size, f"--hand_crop must be in [0, --image_size "
                                                          f"{cfg.data.image_size}), not {cfg.model.hand_crop}"),
        (cfg.model.backbone_pool >= 1 and cfg.data.image_size % cfg.model.backbone_pool == 0,
         f"--backbone_pool must be >= 1 and divide --image_size {cfg.data.image_size}, not {cfg.model.backbone_pool}"),
        (cfg.model.backbone_pool == 1 or cfg.model.hand_crop > 0,
         f"--backbone_pool {cfg.model.backbone_pool} needs hand patches (--hand_crop P), which keep the full "
         "resolution; without them, a smaller --image_size does the same for less decoding"),
        (cfg.model.width_mult >= 0, "--width_mult must be >= 0 (0: the preset's)"),
        (0.0 <= cfg.optim.min_lr_ratio <= 1.0, f"--min_lr_ratio must be in [0, 1], not {cfg.optim.min_lr_ratio}"),
        (cfg.optim.weight_decay >= 0, f"--weight_decay must be >= 0, not {cfg.optim.weight_decay}"),
        (cfg.optim.max_grad_norm >= 0, f"--max_grad_norm must be >= 0 (0: no clipping), not {cfg.optim.max_grad_norm}"),
        (cfg.optim.momentum >= 0, f"--momentum must be >= 0, not {cfg.optim.momentum}"),
        (cfg.data.shuffle_buffer >= 1, f"--shuffle_buffer must be >= 1 sample, not {cfg.data.shuffle_buffer}"),
        (len(cfg.data.crop_scale) == 2 and 0 < cfg.data.crop_scale[0] <= cfg.data.crop_scale[1] <= 1,
         f"--crop_scale takes two area fractions MIN MAX with 0 < MIN <= MAX <= 1, not {list(cfg.data.crop_scale)}"),
        (cfg.data.bucket_size >= 0, f"--bucket_size must be >= 0 (0: 4 x batch_size), not {cfg.data.bucket_size}"),
        (cfg.data.image_size >= 1, f"--image_size must be >= 1 pixel, not {cfg.data.image_size}"),
        (cfg.data.max_frames_per_batch >= 0, f"--max_frames_per_batch must be >= 0 (0: no cap), not "
                                             f"{cfg.data.max_frames_per_batch}"),
        (0.0 <= cfg.data.temporal_scale < 1.0, f"--temporal_scale must be in [0, 1), not {cfg.data.temporal_scale}"),
        (cfg.data.pose_jitter >= 0, f"--pose_jitter must be >= 0, not {cfg.data.pose_jitter}"),
        (cfg.data.prefetch_factor >= 1, f"--prefetch_factor must be >= 1, not {cfg.data.prefetch_factor}"),
        (cfg.run.max_bad_steps >= 0, f"--max_bad_steps must be >= 0, not {cfg.run.max_bad_steps}"),
        (cfg.run.max_steps >= 0, f"--max_steps must be >= 0 (0: no limit), not {cfg.run.max_steps}"),
        (cfg.run.save_every_steps >= 0, f"--save_every_steps must be >= 0 (0: epoch ends only), not "
                                        f"{cfg.run.save_every_steps}"),
        (cfg.run.keep_last >= 0, f"--keep_last must be >= 0, not {cfg.run.keep_last}"),
        (cfg.run.log_every_steps >= 1, f"--log_every_steps must be >= 1, not {cfg.run.log_every_steps}"),
        (cfg.run.progress_every_s >= 0 and cfg.run.progress_every_steps >= 0,
         "--progress_every_s and --progress_every_steps must be >= 0"),
        (cfg.run.dashboard_rows >= 1, f"--dashboard_rows must be >= 1, not {cfg.run.dashboard_rows}"),
        (cfg.run.patience >= 0, f"--patience must be >= 0 (0: off), not {cfg.run.patience}"),
        (cfg.run.beam_width >= 0, f"--beam_width must be >= 0, not {cfg.run.beam_width}"),
        (cfg.run.protocol in ("", *PROTOCOLS), f"--protocol must be one of {', '.join(PROTOCOLS)} (or empty: the "
                                               f"data's), not {cfg.run.protocol!r}"),
        (_optional_float(cfg.run.lm_weight) and _optional_float(cfg.run.word_bonus),
         f"--lm_weight and --word_bonus must be numbers or empty, not {cfg.run.lm_weight!r} / {cfg.run.word_bonus!r}"),
        (not cfg.run.lm or Path(cfg.run.lm).is_file(), f"--lm {cfg.run.lm}: no such file"),
        (cfg.run.beam_width > 1 or not cfg.run.lm, "--lm needs beam search: --beam_width > 1"),
        (cfg.run.resume in ("", "auto") or Path(cfg.run.resume).is_dir(),
         f"--resume must be auto, a checkpoint folder or empty; {cfg.run.resume!r} is not a folder"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def _optional_float(text: str) -> bool:
    try:
        return text == "" or float(text) == float(text)  # not NaN
    except ValueError:
        return False


def fusion_flags(run: RunConfig) -> tuple[float | None, float | None]:
    """--lm_weight / --word_bonus as numbers, None where empty (then the LM's tuned weights apply)."""
    return (float(run.lm_weight) if run.lm_weight else None, float(run.word_bonus) if run.word_bonus else None)


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    d = cfg.to_dict()
    atomic_write_bytes(path, yaml.safe_dump(_plain(d), sort_keys=False).encode("utf-8"))


def _plain(obj):
    """Tuples -> lists, so the YAML and checkpoints hold only plain types."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def plain_dict(cfg: TrainConfig) -> dict:
    return _plain(cfg.to_dict())

