"""Train the MobileNetV3 student with CTC + knowledge distillation from the teacher.

    accelerate launch launch/student.py --teacher_checkpoint runs/teacher/best_model.pth          # online targets
    accelerate launch launch/student.py --soft_targets runs/soft --alpha 0.7 --temperature 3.0      # offline targets
    accelerate launch launch/student.py --arch student_base --pretrained mobilenet_v3_large.pth --data DIR
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 launch/student.py       # 2-rank DDP on CPU
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml launch/student.py --data DIR

loss = (1 - alpha) * CTC + alpha * T^2 * KL(teacher_T || student_T) per valid output frame (cslr/trainer/kd.py).
Targets: the sidecar shards of --soft_targets (offline, written by launch/soft_targets.py) when given, else the
frozen teacher of --teacher_checkpoint run on the same batch (online, outside DDP/DeepSpeed). --alpha 0: CTC only.
--pretrained PATH: a local torchvision ImageNet state dict for the backbone (never downloaded).

YAML (--config, default configs/student.yaml) sets defaults; every `--flag` overrides one field. The same trainer
as launch/teacher.py (AMP, accumulation, DDP/DeepSpeed, resume, W&B): the same outputs in --output_dir
(config.yaml, training.log, checkpoints/, best_model.pth, results.json, training_curves.png, test_hyp.ctm, ...).
"""

import sys
from pathlib import Path

from cslr.recipes.student import setup_student
from cslr.recipes.train import train_main

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "student.yaml")

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:], __doc__, DEFAULT_CONFIG, setup=setup_student))
