"""Seed sweeps: one run of any entry point per seed, then mean, std, min and max of their results.

    python launch/sweep.py --seeds 0,1,2 -- launch/teacher.py --epochs 40              # one after another
    python launch/sweep.py --seeds 0,1,2 --parallel 3 --out runs/t3 -- launch/teacher.py   # 3 local processes
    python launch/sweep.py --seeds 0,1,2 --slurm --out runs/t3 -- launch/teacher.py --data data/phoenix2014
    python launch/sweep.py --summarize --out runs/t3                                     # summary of what is there
    python launch/sweep.py --compare runs/student-ctc-3 runs/student-kd-3              # mean +- std, difference, 95 % interval

The entry point is anything that takes `--seed` and `--output_dir` and writes `results.json` there (the fields of
`cslr.recipes.train.write_results`): a `.py` file runs with this Python, anything else (`accelerate launch ...`)
as given. Each seed runs in `<out>/seed-<k>` with `--seed k --output_dir <out>/seed-<k>`, plus `--resume auto`
when that folder already holds checkpoints (an interrupted seed continues). A seed whose `results.json` exists is
done and is never run again: a rerun completes the missing and failed seeds only.

`<out>/sweep.json` is the plan (command, seeds, W&B group); `<out>/seed-<k>/sweep_status.json` what happened to
a seed (running, exit code), `<out>/seed-<k>/sweep.log` its output. `summary.json` / `summary.md` beside them:
mean, sample std (n - 1), min and max over the done seeds of the dev and test WER, S/D/I and per-signer test WER,
with a per-seed table; failed and unfinished seeds are listed as such and never averaged in.

W&B: every seed's run gets `WANDB_RUN_GROUP=<group>` (wandb.init reads it as its `group`), so the runs of one
sweep form one group. With `--slurm` the seeds become one Slurm array (`launch/slurm/sweep.sbatch`, `--parallel`
throttles it) and a job that depends on the whole array writes the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cslr.io import atomic_write_bytes, atomic_write_json, read_json_record, save_figure

from .seedstats import difference, stats

PLAN = "sweep.json"
STATUS = "sweep_status.json"
LOG = "sweep.log"
RESULTS = "results.json"
LAUNCH = Path(__file__).resolve().parents[2] / "launch"
BATCH_SCRIPT = LAUNCH / "slurm" / "sweep.sbatch"
# Flags the sweep sets for every seed: the command given must not carry them.
OWN_FLAGS = ("--seed", "--output_dir", "--resume")
# Per-seed figures averaged in the summary: results.json key -> label. S/D/I as % of the test reference words.
METRICS = {"best_dev_wer": "dev WER", "test_wer": "test WER", "test_sub_pct": "test S %", "test_del_pct": "test D %",
           "test_ins_pct": "test I %", "best_epoch": "best epoch"}


@dataclass
class SweepPlan:
    """What a sweep runs: written once to `<out>/sweep.json`, read back by reruns and by Slurm array tasks."""

    out: str                        # absolute path of the sweep folder
    command: list[str]              # the entry point and its flags, without --seed/--output_dir/--resume
    seeds: list[int]
    group: str                      # W&B group of the seeds' runs (WANDB_RUN_GROUP)
    cwd: str                        # where the command runs (relative paths in it are resolved there)
    python: str = sys.executable    # runs a `.py` entry point
    env: dict = field(default_factory=dict)  # extra environment for every seed (e.g. CSLR_CPU_THREADS)

    @property
    def root(self) -> Path:
        return Path(self.out)

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed-{seed}"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / PLAN, dataclasses.asdict(self))

    @classmethod
    def load(cls, out: str | Path) -> "SweepPlan":
        rec = read_json_record(Path(out) / PLAN)
        if rec is None:
            raise FileNotFoundError(f"{out}: no {PLAN} (not a sweep folder, or the sweep was never started)")
        return cls(**rec)


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" or "0-4" or "0,5-7" -> a list of distinct non-negative seeds, in order."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"--seeds {text!r}: expected comma-separated non-negative integers or ranges (0,1,2 or 0-2)")
        for s in range(int(lo), int(hi or lo) + 1):
            if s not in seeds:
                seeds.append(s)
    if not seeds:
        raise ValueError(f"--seeds {text!r}: no seed")
    return seeds


def check_command(command: list[str]) -> None:
    if not command:
        raise ValueError("no command: put the entry point and its flags after `--` (e.g. -- launch/teacher.py ...)")
    for tok in command:
        if tok in OWN_FLAGS or tok.startswith(tuple(f + "=" for f in OWN_FLAGS)):
            raise ValueError(f"the command carries {tok.split('=')[0]}: the sweep sets --seed, --output_dir and "
                             f"--resume for every seed itself")


def make_plan(out: str | Path, command: list[str], seeds: list[int], env: dict | None = None) -> SweepPlan:
    """The plan of a new sweep, or the folder's own plan with these seeds when it was started before (same command
    only: two experiments in one folder would average different things together)."""
    check_command(command)
    out = Path(out).resolve()
    old = read_json_record(out / PLAN)
    if old is not None:
        plan = SweepPlan(**old)
        if plan.command != list(command):
            raise ValueError(f"{out} holds a sweep of another command:\n  {shlex.join(plan.command)}\nnot\n  "
                             f"{shlex.join(command)}\nchoose another --out")
        plan.seeds = list(seeds)
        plan.env = {**plan.env, **(env or {})}
        return plan
    group = os.environ.get("WANDB_RUN_GROUP") or f"{out.name}-{secrets.token_hex(3)}"
    return SweepPlan(out=str(out), command=list(command), seeds=list(seeds), group=group, cwd=os.getcwd(),
                     env=dict(env or {}))


# ------------------------------------------------------------------------------------------------- one seed
def seed_state(plan: SweepPlan, seed: int) -> dict:
    """{"state": done | failed | unfinished | missing, ...}: done when results.json exists; failed when the last
    attempt exited non-zero; unfinished when one started and left no exit code (killed, or still running)."""
    d = plan.seed_dir(seed)
    status = read_json_record(d / STATUS) or {}
    if (d / RESULTS).is_file():
        return {**status, "state": "done"}
    if status.get("returncode") not in (None, 0):
        return {**status, "state": "failed"}
    if status:
        return {**status, "state": "unfinished"}
    return {"state": "missing"}


def has_checkpoints(run_dir: Path) -> bool:
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(ckpt.iterdir())


def seed_argv(plan: SweepPlan, seed: int) -> list[str]:
    """The command of one seed: the plan's, then --seed, --output_dir (and --resume auto over checkpoints)."""
    cmd = list(plan.command)
    if cmd[0].endswith(".py"):
        cmd = [plan.python, *cmd]
    d = plan.seed_dir(seed)
    cmd += ["--seed", str(seed), "--output_dir", str(d)]
    if has_checkpoints(d):
        cmd += ["--resume", "auto"]
    return cmd


def seed_env(plan: SweepPlan, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(plan.env)
    env["WANDB_RUN_GROUP"] = plan.group
    return env


class _Children:
    """The seeds' processes now running; a signal to the sweep (Ctrl-C, Slurm's USR1 warning, SIGTERM) is passed
    on to each, whose trainer then saves a checkpoint and exits."""

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.RLock()  # the handler may interrupt the main thread while it holds the lock
        self.signalled: int | None = None

    def forward(self, signum, _frame=None) -> None:
        self.signalled = signum
        # Ctrl-C becomes SIGTERM: the trainers save a checkpoint on SIGTERM and SIGUSR1, not on SIGINT.
        send = signal.SIGTERM if signum == signal.SIGINT else signum
        print(f"sweep: signal {signum}, sending {int(send)} to {len(self.procs)} running seed(s); no new seed starts",
              file=sys.stderr, flush=True)
        with self.lock:
            for p in self.procs:
                if p.poll() is None:
                    try:  # the child's whole process group: `accelerate launch` and its ranks
                        os.killpg(p.pid, send)
                    except ProcessLookupError:
                        pass

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.forward)


CHILDREN = _Children()


# The child ignores USR1 until a trainer installs its handler: `accelerate launch` (and any entry point without a
# handler) would die of it, as in launch/slurm/single_node.sbatch.
IGNORE_USR1 = ["bash", "-c", 'trap "" USR1; exec "$@"', "cslr-seed"]


def run_seed(plan: SweepPlan, seed: int, extra_env: dict | None = None) -> int:
    """Run one seed to its end -> exit code (0 also when it was done already). Writes sweep_status.json and
    appends the seed's output to sweep.log."""
    state = seed_state(plan, seed)
    if state["state"] == "done" or CHILDREN.signalled is not None:  # done, or the sweep is being stopped
        return 0
    d = plan.seed_dir(seed)
    d.mkdir(parents=True, exist_ok=True)
    cmd = seed_argv(plan, seed)
    status = {"seed": seed, "command": cmd, "host": socket.gethostname(), "started": _now(), "returncode": None,
              "attempts": int(state.get("attempts", 0)) + 1, "slurm_job": _slurm_job()}
    atomic_write_json(d / STATUS, status)
    env = seed_env(plan)
    env.update(extra_env or {})
    with open(d / LOG, "ab") as log:
        log.write(f"\n==== {_now()} seed {seed}: {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen([*IGNORE_USR1, *cmd], cwd=plan.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, which `forward` signals
        with CHILDREN.lock:
            CHILDREN.procs.add(proc)
        try:
            rc = proc.wait()
        finally:
            with CHILDREN.lock:
                CHILDREN.procs.discard(proc)
    done = (d / RESULTS).is_file()
    if rc == 0 and not done and CHILDREN.signalled is None:
        rc = 1  # exit 0 without results.json: not a run this sweep can summarise
        status["error"] = f"exited 0 but wrote no {RESULTS}"
    atomic_write_json(d / STATUS, {**status, "returncode": None if (rc == 0 and not done) else rc,
                                   "ended": _now(), "stopped_by_signal": CHILDREN.signalled})
    print(f"sweep: seed {seed} " + ("done" if done else f"exited {rc}" if rc else "stopped (checkpoint saved)")
          + f" -> {d}", file=sys.stderr, flush=True)
    return rc


def pending(plan: SweepPlan) -> list[int]:
    return [s for s in plan.seeds if seed_state(plan, s)["state"] != "done"]


def run_local(plan: SweepPlan, parallel: int = 1) -> dict[int, int]:
    """Run the seeds not done yet, `parallel` at a time -> {seed: exit code}. CPU runs in parallel share the
    cores: each gets CSLR_CPU_THREADS = cores / parallel unless the environment sets it."""
    todo = pending(plan)
    extra = {}
    if parallel > 1 and "CSLR_CPU_THREADS" not in {**os.environ, **plan.env}:
        extra["CSLR_CPU_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // parallel))
    CHILDREN.install()
    codes: dict[int, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {}
        for s in todo:
            if CHILDREN.signalled is not None:
                break
            futures[s] = pool.submit(run_seed, plan, s, extra)
        for s, f in futures.items():
            codes[s] = f.result()
    return codes


def run_array_task(out: str | Path, index: int) -> int:
    """One task of the Slurm array: seed number `index` of the plan. After Slurm's USR1 warning the seed saves a
    checkpoint, and the task requeues itself (it resumes with --resume auto)."""
    plan = SweepPlan.load(out)
    seed = plan.seeds[index]
    CHILDREN.install()
    rc = run_seed(plan, seed)
    if CHILDREN.signalled == signal.SIGUSR1 and rc == 0 and seed_state(plan, seed)["state"] != "done":
        job = os.environ.get("SLURM_JOB_ID")
        print(f"sweep: seed {seed} saved its checkpoint; requeueing job {job}", file=sys.stderr, flush=True)
        subprocess.run(["scontrol", "requeue", job], check=False)
    return rc


# ------------------------------------------------------------------------------------------------- Slurm
def submit_slurm(plan: SweepPlan, parallel: int = 0, sbatch_args: list[str] | None = None,
                 env: dict | None = None) -> dict:
    """One Slurm array over the seeds not done yet (`%parallel` running at once when given), and a summary job
    that starts when the whole array has ended, whatever its tasks' fates -> {"array": id, "summary": id}."""
    todo = [plan.seeds.index(s) for s in pending(plan)]
    sbatch_args = list(sbatch_args or [])
    env = seed_env(plan, env)
    env["CSLR_PYTHON"], env["CSLR_SWEEP"] = plan.python, str(LAUNCH / "sweep.py")
    ids: dict = {"array": None, "summary": None, "tasks": todo}
    root = plan.root
    if todo:
        array = ",".join(map(str, todo)) + (f"%{parallel}" if parallel > 0 else "")
        ids["array"] = _sbatch(["--array", array, "--job-name", f"sweep-{root.name}",
                                "--output", str(root / "slurm-%A_%a.out"), *sbatch_args, str(BATCH_SCRIPT), str(root)],
                               env, plan.cwd)
    summarize_cmd = shlex.join([plan.python, str(LAUNCH / "sweep.py"), "--summarize", "--out", str(root)])
    dep = ["--dependency", f"afterany:{ids['array']}"] if ids["array"] else []
    # The summary job takes little: one CPU, no GPU, a few minutes; the partition etc. from the user's arguments.
    keep = _sbatch_placement(sbatch_args)
    ids["summary"] = _sbatch([*dep, "--job-name", f"sweep-{root.name}-summary", "--ntasks", "1", "--cpus-per-task", "1",
                              "--time", "10", "--output", str(root / "slurm-summary-%j.out"), *keep,
                              "--wrap", summarize_cmd], env, plan.cwd)
    return ids


def _sbatch_placement(args: list[str]) -> list[str]:
    """The partition, account and QoS among the array's sbatch arguments (the summary job runs there too)."""
    names = ("--partition", "-p", "--account", "-A", "--qos", "-q")
    keep, i = [], 0
    while i < len(args):
        a = args[i]
        if a in names and i + 1 < len(args):
            keep += args[i:i + 2]
            i += 2
            continue
        if a.startswith(tuple(n + "=" for n in names if n.startswith("--"))):
            keep.append(a)
        i += 1
    return keep


def _sbatch(args: list[str], env: dict, cwd: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {shlex.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


# ------------------------------------------------------------------------------------------------- summary
def seed_row(seed: int, state: dict, results: dict | None) -> dict:
    row = {"seed": seed, "state": state["state"], "returncode": state.get("returncode")}
    if results:
        n = results.get("test_num_ref_words")
        row.update({k: results.get(k) for k in ("best_dev_wer", "best_epoch", "test_wer", "test_sub", "test_del",
                                                 "test_ins", "test_num_ref_words", "epochs_run", "global_steps",
                                                 "wall_time_s", "world_size")})
        for k in ("sub", "del", "ins"):
            c = results.get(f"test_{k}")
            row[f"test_{k}_pct"] = 100.0 * c / n if c is not None and n else None
        row["test_per_signer"] = {s: v.get("wer") for s, v in (results.get("test_per_signer") or {}).items()}
    return row


def summarize(plan: SweepPlan) -> dict:
    """The sweep's summary from the seeds' folders (stats over done seeds only)."""
    rows = []
    for s in plan.seeds:
        state = seed_state(plan, s)
        res = read_json_record(plan.seed_dir(s) / RESULTS) if state["state"] == "done" else None
        if state["state"] == "done" and res is None:
            state = {**state, "state": "failed", "error": f"unreadable {RESULTS}"}
        rows.append(seed_row(s, state, res))
    done = [r for r in rows if r["state"] == "done"]
    signers = sorted({s for r in done for s in (r.get("test_per_signer") or {})})
    return {
        "command": plan.command, "group": plan.group, "seeds": plan.seeds, "written": _now(),
        "std": "sample standard deviation (n - 1) over the done seeds",
        "done": [r["seed"] for r in done],
        "failed": [r["seed"] for r in rows if r["state"] == "failed"],
        "unfinished": [r["seed"] for r in rows if r["state"] in ("unfinished", "missing")],
        "metrics": {k: stats([r.get(k) for r in done]) for k in METRICS},
        "test_counts": {k: stats([r.get(f"test_{k}") for r in done]) for k in ("sub", "del", "ins")},
        "per_signer_test_wer": {s: stats([(r.get("test_per_signer") or {}).get(s) for r in done]) for s in signers},
        "per_seed": rows,
    }


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def summary_markdown(summary: dict) -> str:
    n_done, seeds = len(summary["done"]), summary["seeds"]
    lines = [f"# Seed sweep: {n_done} of {len(seeds)} seeds done", "",
             f"Command: `{shlex.join(summary['command'])}` with `--seed k --output_dir seed-k`; W&B group "
             f"`{summary['group']}`.", "",
             "Statistics over the done seeds only; std is the sample standard deviation (n - 1), `-` for one seed.", ""]
    if summary["failed"]:
        lines += [f"**Failed seeds (not in the statistics): {', '.join(map(str, summary['failed']))}** "
                  f"(see `seed-k/sweep.log`).", ""]
    if summary["unfinished"]:
        lines += [f"**Unfinished or not run (not in the statistics): {', '.join(map(str, summary['unfinished']))}**.", ""]
    lines += ["| metric | mean | std | min | max | n |", "|---|---:|---:|---:|---:|---:|"]
    for k, label in METRICS.items():
        s = summary["metrics"][k]
        lines.append(f"| {label} | {_f(s['mean'])} | {_f(s['std'])} | {_f(s['min'])} | {_f(s['max'])} | {s['n']} |")
    if summary["per_signer_test_wer"]:
        lines += ["", "Per-signer test WER (%):", "", "| signer | mean | std | min | max | n |", "|---|---:|---:|---:|---:|---:|"]
        for signer, s in summary["per_signer_test_wer"].items():
            lines.append(f"| {signer} | {_f(s['mean'])} | {_f(s['std'])} | {_f(s['min'])} | {_f(s['max'])} | {s['n']} |")
    lines += ["", "| seed | state | dev WER | best epoch | test WER | S | D | I | N | steps | wall s |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["per_seed"]:
        state = r["state"] if r["state"] != "failed" else f"FAILED (exit {r.get('returncode')})"
        lines.append(f"| {r['seed']} | {state} | {_f(r.get('best_dev_wer'))} | {_f(r.get('best_epoch'))} | "
                     f"{_f(r.get('test_wer'))} | {_f(r.get('test_sub'))} | {_f(r.get('test_del'))} | "
                     f"{_f(r.get('test_ins'))} | {_f(r.get('test_num_ref_words'))} | {_f(r.get('global_steps'))} | "
                     f"{_f(r.get('wall_time_s'), 0)} |")
    return "\n".join(lines) + "\n"


def write_summary(plan: SweepPlan) -> dict:
    summary = summarize(plan)
    atomic_write_json(plan.root / "summary.json", summary)
    atomic_write_bytes(plan.root / "summary.md", summary_markdown(summary).encode())
    return summary


# ------------------------------------------------------------------------------------------------- comparison
COMPARED = {"best_dev_wer": "dev WER", "test_wer": "test WER"}


def compare_sweeps(folders: list[str | Path]) -> dict:
    """Each sweep's done seeds (mean, std of COMPARED), and every later sweep against the first (`difference`)."""
    rows = []
    for folder in folders:
        summary = summarize(SweepPlan.load(folder))
        done = [r for r in summary["per_seed"] if r["state"] == "done"]
        rows.append({"sweep": str(folder), "seeds": [r["seed"] for r in done],
                     "values": {k: [r.get(k) for r in done] for k in COMPARED},
                     "stats": {k: summary["metrics"][k] for k in COMPARED}})
    base = rows[0]
    for r in rows[1:]:
        r["vs_first"] = {k: difference(base["values"][k], r["values"][k]) for k in COMPARED}
    return {"baseline": base["sweep"], "sweeps": rows,
            "note": "difference = this sweep's mean - the first's; 95 % interval from Welch's t (df rounded down); "
                    "separated = the interval excludes 0"}


def compare_markdown(comp: dict) -> str:
    def ms(st: dict) -> str:
        return "-" if st["mean"] is None else f"{st['mean']:.2f} +- {_f(st['std'])}"

    lines = ["| sweep | seeds | " + " | ".join(f"{v} (mean +- std)" for v in COMPARED.values()) + " |",
             "|---|---|" + "---:|" * len(COMPARED)]
    for r in comp["sweeps"]:
        lines.append(f"| {r['sweep']} | {','.join(map(str, r['seeds']))} | "
                     + " | ".join(ms(r["stats"][k]) for k in COMPARED) + " |")
    if len(comp["sweeps"]) > 1:
        lines += ["", f"Against {comp['baseline']} ({comp['note']}):", "",
                  "| sweep | metric | difference | 95 % interval | larger than the spread |", "|---|---|---:|---|---|"]
        for r in comp["sweeps"][1:]:
            for k, label in COMPARED.items():
                d = r["vs_first"][k]
                ci = "-" if d["ci95"] is None else f"[{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]"
                sep = "-" if d["separated"] is None else ("yes" if d["separated"] else "no")
                lines.append(f"| {r['sweep']} | {label} | {_f(d['diff'])} | {ci} | {sep} |")
    return "\n".join(lines) + "\n"


def plot_comparison(comp: dict, path: Path) -> None:
    """Each sweep's seeds as points beside their mean +- std, dev and test WER side by side (the axis zooms to the
    values: the spread is what the plot is for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COMPARED), figsize=(5 * len(COMPARED), 4), squeeze=False)
    names = [Path(r["sweep"]).name for r in comp["sweeps"]]
    for ax, (k, label) in zip(axes[0], COMPARED.items()):
        for i, r in enumerate(comp["sweeps"]):
            st = r["stats"][k]
            if st["mean"] is None:
                continue
            ax.errorbar(i - 0.08, st["mean"], yerr=st["std"] or 0.0, fmt="s", capsize=8, markersize=9,
                        color=f"C{i}", label="mean +- std" if i == 0 else None)
            vals = [v for v in r["values"][k] if v is not None]
            ax.plot([i + 0.08] * len(vals), vals, "o", color=f"C{i}", alpha=0.6, label="seeds" if i == 0 else None)
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.legend(loc="best", fontsize=8)
        ax.set(ylabel="WER (%)", title=f"{label}: seeds and mean +- std")
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------------- the door
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s --seeds 0,1,2 [--parallel N] [--slurm] [--out DIR] -- ENTRY.py FLAGS...")
    p.add_argument("--seeds", default="0,1,2", help="seeds: 0,1,2 or 0-4 (default 0,1,2)")
    p.add_argument("--out", default="", help="sweep folder (default runs/sweep-<entry point name>)")
    p.add_argument("--parallel", type=int, default=None,
                   help="seeds at once: local processes (default 1), or with --slurm the array's throttle "
                        "(%%N; default: no limit)")
    p.add_argument("--slurm", action="store_true", help="submit a Slurm array (launch/slurm/sweep.sbatch) + summary job")
    p.add_argument("--sbatch", default="", help="extra sbatch arguments for the array, one string "
                                                "(e.g. \"--partition gpu --gpus-per-node 1 --time 12:00:00\")")
    p.add_argument("--summarize", action="store_true", help="only (re)write summary.json/md of --out")
    p.add_argument("--compare", nargs="+", metavar="SWEEP", default=None,
                   help="compare finished sweeps (the first is the baseline): mean +- std of dev/test WER, each "
                        "difference with its 95 %% interval; --out FILE.json also writes it and FILE.png (a plot)")
    p.add_argument("--array_task", type=int, default=None, help=argparse.SUPPRESS)  # run by sweep.sbatch
    return p


def sweep_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.array_task is not None:
        return run_array_task(args.out, args.array_task)
    if args.compare:
        try:
            comp = compare_sweeps(args.compare)
        except FileNotFoundError as e:
            parser.error(str(e))
        if args.out:
            atomic_write_json(args.out, comp)
            plot_comparison(comp, Path(args.out).with_suffix(".png"))
        print(compare_markdown(comp), end="")
        return 0
    if args.summarize:
        if not args.out:
            parser.error("--summarize needs --out")
        try:
            summary = write_summary(SweepPlan.load(args.out))
        except FileNotFoundError as e:
            parser.error(str(e))
        print(summary_markdown(summary))
        return 1 if summary["failed"] else 0
    try:
        seeds = parse_seeds(args.seeds)
        check_command(command)
        entry = next((Path(t).stem for t in command if t.endswith(".py")), "run")
        out = args.out or f"runs/sweep-{entry}"
        plan = make_plan(out, command, seeds)
    except ValueError as e:
        parser.error(str(e))
    if args.parallel is not None and args.parallel < 1:
        parser.error("--parallel must be >= 1")
    plan.save()
    todo = pending(plan)
    print(f"sweep: {len(plan.seeds)} seeds, {len(plan.seeds) - len(todo)} done, running {todo} -> {plan.root} "
          f"(W&B group {plan.group})", file=sys.stderr, flush=True)
    if args.slurm:
        ids = submit_slurm(plan, args.parallel or 0, shlex.split(args.sbatch))
        atomic_write_json(plan.root / "slurm_jobs.json", ids)
        print(f"sweep: Slurm array job {ids['array']} (tasks {ids['tasks']}), summary job {ids['summary']} "
              f"-> {plan.root / 'summary.md'}", flush=True)
        return 0
    run_local(plan, args.parallel or 1)
    summary = write_summary(plan)
    print(summary_markdown(summary), flush=True)
    if CHILDREN.signalled is not None:
        return 128 + CHILDREN.signalled if CHILDREN.signalled != signal.SIGUSR1 else 0
    return 0 if len(summary["done"]) == len(plan.seeds) else 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _slurm_job() -> str | None:
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")
