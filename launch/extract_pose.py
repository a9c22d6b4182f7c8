"""MediaPipe Holistic landmarks of a corpus -> <out>/<split>/<id>.npy, what `prepare.py --pose-dir` reads.

    python launch/extract_pose.py --corpus phoenix2014 --root PATH/phoenix2014-release --out poses/phoenix2014
    python launch/extract_pose.py --corpus videos --annotations ANN.csv --videos DIR --out poses/mine [--fps 25]
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 4 launch/extract_pose.py ...   # 4 ranks
    sbatch --array=0-49 launch/slurm/extract_pose.sbatch --corpus phoenix2014 --root ... --out ...      # 50 tasks
    python launch/extract_pose.py --corpus phoenix2014 --root ... --out poses/phoenix2014 --verify      # exit 1: gaps

Needs `pip install -e ".[landmarks]" && pip install --no-deps mediapipe==0.10.21`. How the work is split, resumed
and reported: cslr/recipes/extract_pose.py.
"""

import argparse
import sys

from cslr.datasets.convert import SPLITS, ConversionError
from cslr.datasets.corpora import KINDS
from cslr.datasets.landmarks import LandmarkError
from cslr.recipes.extract_pose import FORMATS, ExtractConfig, ExtractError, extract, summary, verify


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=KINDS)
    p.add_argument("--root", help="the corpus folder (PHOENIX release, CSL-Daily)")
    p.add_argument("--annotations", help="--corpus videos: the CSV (id,path,split,signer,glosses)")
    p.add_argument("--videos", help="--corpus videos: the folder its paths are relative to")
    p.add_argument("--out", required=True, help="POSE_DIR: <out>/<split>/<id>.npy")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="npy", help="npy (float16) or pose (pose-format)")
    p.add_argument("--fps", type=float, default=None, help="resample to this rate (use prepare.py's --fps)")
    p.add_argument("--workers", type=int, default=1, help="processes in this task (each uses ~2 cores)")
    p.add_argument("--skip-bad", action="store_true", help="skip, count and list unreadable videos")
    p.add_argument("--verify", action="store_true", help="only check that every video has a well-formed file")
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--task-index", type=int, default=None, help="this task's index (default: Slurm array/ranks)")
    p.add_argument("--num-tasks", type=int, default=None)
    p.add_argument("--log-every", type=float, default=30.0, help="seconds between progress lines off a terminal")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = ExtractConfig(a.corpus, a.out, a.root, a.annotations, a.videos, a.fmt, a.fps, a.workers, a.skip_bad,
                        tuple(s.strip() for s in a.splits.split(",") if s.strip()), a.task_index, a.num_tasks,
                        not a.no_progress, a.log_every)
    try:
        if a.verify:
            checked, problems = verify(cfg)
            print("\n".join(problems + [f"verify {a.out}: {checked} videos, {len(problems)} missing or malformed"]))
            return 1 if problems else 0
        print(summary(extract(cfg)))
    except (ExtractError, ConversionError, LandmarkError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
