"""Train the I3D + pose teacher.

    accelerate launch launch/teacher.py                       # built-in synthetic corpus, CPU or one GPU
    accelerate launch launch/teacher.py --data data/phoenix2014 --config configs/phoenix2014/teacher.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml launch/teacher.py --data DIR
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml launch/teacher.py --data DIR
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/teacher.py   # 2-rank DDP on CPU

YAML (--config, default configs/teacher.yaml) sets defaults; every `--flag` overrides one field.
Outputs in --output_dir: config.yaml, training.log, checkpoints/, best_model.pth, results.json,
training_curves.png, test_hyp.ctm, tensorboard/, wandb/.
"""

import sys
from pathlib import Path

from cslr.recipes.train import train_main

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "teacher.yaml")

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:], __doc__, DEFAULT_CONFIG))
