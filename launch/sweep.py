"""Run one entry point over several seeds and summarise them (mean, sample std, min, max; failed seeds listed).

    python launch/sweep.py --seeds 0,1,2 --out runs/teacher-3 -- launch/teacher.py --epochs 40
    python launch/sweep.py --seeds 0,1,2 --parallel 3 --out runs/student-3 -- launch/student.py --teacher_checkpoint T
    python launch/sweep.py --seeds 0,1,2 --slurm --sbatch "--gpus-per-node 1" --out runs/t3 -- launch/teacher.py
    python launch/sweep.py --summarize --out runs/teacher-3
    python launch/sweep.py --compare runs/student-ctc-3 runs/student-kd-3   # is the difference larger than the spread?

Outputs in --out: seed-<k>/ (each a normal run folder, plus sweep.log and sweep_status.json), sweep.json (the plan),
summary.json and summary.md. A rerun runs only the seeds without results.json; an interrupted seed resumes.
Exit status: 0 when every seed is done, 1 when some failed or did not finish.
"""

import sys

from cslr.recipes.sweep import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main(sys.argv[1:]))
