"""One optimizer step of the teacher trainer on one fixed global batch, split over this launch's ranks.

    accelerate launch [--multi_gpu --num_processes 2] tests/rank_step.py DATA OUT.pt [--sync_bn]

The global batch is the first 8 videos of the train split in the evaluation order (no augmentation, sorted by
length); rank r of R takes rows r, r + R, ... Every rank's share must hold a video of the batch's full length: the
models trim a batch to its longest video, and in training mode BatchNorm counts padded frames, so a share with less
padding would normalise differently whatever the synchronisation. Dropout is 0 and the optimizer SGD, so the
step is a fixed function of the averaged gradient. Rank 0 writes the weights and buffers before and after the step to OUT.pt.

With --sync_bn on one process the BatchNorm layers are converted all the same, over a one-rank gloo group: the
reference then computes the BatchNorm statistics with the same arithmetic as the ranks. Against torch's own
BatchNorm the layers agree to ~1e-7, but the I3D's max-pools route each gradient to the largest of near-equal
post-ReLU values, so rounding-level differences move whole gradient entries (measured: 9 % on some BatchNorm
biases); the same arithmetic on both sides keeps the comparison about the distribution, not about rounding.
Used by tests/test_rank_invariance.py.
"""

import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed

from cslr.datasets.pipeline import build_loader
from cslr.datasets.vocab import Vocabulary
from cslr.models.checkpoint import build_model
from cslr.recipes.train import accelerator_for, sync_batchnorm
from cslr.trainer.config import TrainConfig
from cslr.trainer.syncbn import convert_sync_batchnorm
from cslr.trainer.trainer import Trainer

GLOBAL_BATCH = 8


def main(data: Path, out: Path, sync_bn: bool) -> None:
    cfg = TrainConfig()
    cfg.data.data, cfg.data.batch_size, cfg.data.num_workers, cfg.data.image_size = str(data), GLOBAL_BATCH, 0, 32
    cfg.model.arch, cfg.model.dropout = "teacher_tiny", 0.0
    cfg.data.modalities = tuple(cfg.model.modality.split("+"))
    cfg.optim.optimizer, cfg.optim.learning_rate, cfg.optim.warmup_epochs, cfg.optim.epochs = "sgd", 0.1, 0.0, 1
    cfg.run.output_dir, cfg.run.report_to, cfg.run.sync_bn = str(out.parent / "run"), "none", sync_bn
    acc = accelerator_for(cfg)
    set_seed(0)
    vocab = Vocabulary.load(data / "vocab.txt")
    model, meta = build_model(cfg.model, len(vocab))
    if sync_bn and acc.num_processes == 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{out.parent / 'pg'}", rank=0, world_size=1)
        model = convert_sync_batchnorm(model, acc.device)
    else:
        model = sync_batchnorm(cfg, acc, model)
    loader = build_loader(cfg.data, "train", vocab, train=False, output_length=model.output_length)
    batch = next(iter(loader))
    assert len(batch["keys"]) == GLOBAL_BATCH, batch["keys"]
    rows = slice(acc.process_index, None, acc.num_processes)
    assert int(batch["lengths"][rows].max()) == int(batch["lengths"].max()), batch["lengths"]
    batch = {k: v[rows] if isinstance(v, (torch.Tensor, list)) and len(v) == GLOBAL_BATCH else v
             for k, v in batch.items()}
    trainer = Trainer(cfg, acc, model, vocab, "phoenix2014", meta)
    lr = trainer.optimizer.param_groups[0]["lr"]
    before = {k: v.detach().cpu().clone() for k, v in acc.unwrap_model(trainer.model).state_dict().items()}
    result = trainer.train_step(batch)
    assert result["finite"], result
    if acc.is_main_process:
        state = {k: v.detach().cpu().clone() for k, v in acc.unwrap_model(trainer.model).state_dict().items()}
        torch.save({"before": before, "state": state, "loss": result["loss"], "grad_norm": result["grad_norm"], "lr": lr,
                    "world_size": acc.num_processes}, out)
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), "--sync_bn" in sys.argv[3:])
