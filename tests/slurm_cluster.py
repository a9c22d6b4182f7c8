"""A throw-away one-node Slurm cluster on loopback for the tests (Debian `slurm-wlm` + `munge`, run as root).

Everything lives under one temp folder: a generated munge key and socket, `slurm.conf`, state, spool, pid and
log files. `munged`, `slurmctld` and `slurmd` run in the foreground as children of the test process and are
stopped by their process ids; nothing in /etc or /run is touched. By hand (as root):

    python tests/slurm_cluster.py /tmp/slurm     # starts the cluster, prints the SLURM_CONF to export, Ctrl-C stops
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "srun")


def missing_tools() -> list[str]:
    """The Slurm/munge programs this module needs that are not installed (daemons live in /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [d for d in DAEMONS if shutil.which(d, path=path) is None]


def _tool(name: str) -> str:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])) or name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, host: str, cpus: int, munge_socket: Path) -> str:
    """A minimal container-friendly config: no cgroups, no accounting, linuxproc process tracking.

    `cred_expire=5`: a requeued job may start again 5 s after it ended (the default, 120 s, would make the
    preemption test wait two minutes)."""
    ports = (_free_port(), _free_port())
    return f"""\
ClusterName=cslrtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ commands
    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *cmd: str, env: dict | None = None, check: bool = True, timeout: int = 60) -> str:
        proc = subprocess.run([_tool(cmd[0]), *cmd[1:]], env=self.env(env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.logs()}")
        return proc.stdout

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> int:
        proc = subprocess.run([_tool("sbatch"), "--parsable", *args], env=self.env(env), capture_output=True,
                              text=True, timeout=60, cwd=cwd)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_job(self, job_id: int, states: set[str], timeout: float, until=None) -> dict:
        """Poll until the job is in one of `states` (or `until(job)` is true); fail with the logs on timeout."""
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states or (until is not None and until(info)):
                return info
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f}s (wanted "
                                   f"{sorted(states)}): {info}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self, tail: int = 30) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.root / name
            if p.is_file():
                lines = p.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------ life cycle
    def start(self, cpus: int, timeout: float = 60) -> "SlurmCluster":
        for d in ("state", "spool", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key, sock = self.root / "munge" / "munge.key", self.root / "munge" / "munge.socket"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / "plugstack.conf").write_text("")
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(slurm_conf(self.root, host, cpus, sock))
        self._spawn("munged", "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                    f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--log-file={self.root / 'munge' / 'munged.log'}",
                    f"--seed-file={self.root / 'munge' / 'munged.seed'}")
        self._wait(lambda: sock.exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._wait(lambda: self.run("scontrol", "ping", check=False, timeout=10).find("UP") >= 0, timeout, "slurmctld")
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False, timeout=10).strip() == "idle", timeout,
                   "an idle node")
        return self

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.stdout", "wb")
        self.procs[name] = subprocess.Popen([_tool(name), *args], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead or time.time() > deadline:
                outs = "\n".join(f"--- {n}.stdout\n{(self.root / f'{n}.stdout').read_text(errors='replace')[-2000:]}"
                                 for n in self.procs)
                self.stop()
                raise RuntimeError(f"Slurm test cluster: no {what} (exited: {dead})\n{outs}\n{self.logs()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons we started (by pid), slurmd first, munged last."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run([_tool("scancel"), "--full", "--user=root"], env=self.env(), capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def start_cluster(root: Path, cpus: int | None = None) -> SlurmCluster:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return SlurmCluster(root=root, conf=root / "slurm.conf").start(cpus or os.cpu_count() or 1)


if __name__ == "__main__":
    import sys

    cluster = start_cluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cslr-slurm"))
    print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster")
    try:
        signal.pause()
    finally:
        cluster.stop()
