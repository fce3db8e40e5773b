"""A real one-node SLURM cluster on localhost for the launch tests: munged, slurmctld and slurmd from
Debian's `slurm-wlm` and `munge`, each started in the foreground as our own child process, with every
file (key, sockets, state, spool, logs, slurm.conf) in one temporary folder.

`LocalSlurm.why_not()` says why it cannot run here (not root, packages missing); `start()` raises
`SlurmUnavailable` with the daemons' last log lines when a daemon does not come up. `stop()` cancels
what is left, stops the daemons and checks that none of their processes remain.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
INSTALL_HINT = "apt-get install -y slurm-wlm munge (as .ci/run does)"


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the local cluster; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


class LocalSlurm:
    """One node named after this host, with this host's CPUs, no GPUs, short timeouts."""

    def __init__(self, root: Path, proctrack: str = "linuxproc", kill_wait_s: int = 20) -> None:
        self.root = root
        self.proctrack = proctrack
        self.kill_wait_s = kill_wait_s
        self.node = socket.gethostname().split(".")[0]
        # At least 2, for a job of 2 ranks on a 1-CPU machine (config_overrides: slurmd takes the number).
        self.cpus = max(2, len(os.sched_getaffinity(0)))
        self.conf = root / "slurm.conf"
        self._procs: dict[str, subprocess.Popen] = {}

    @staticmethod
    def why_not() -> str | None:
        if os.geteuid() != 0:
            return "the local SLURM cluster needs root (slurmd starts jobs as their user)"
        missing = [n for n in (*DAEMONS, *CLIENTS) if _which(n) is None]
        if missing:
            return f"SLURM or munge is not installed ({', '.join(missing)} not found): {INSTALL_HINT}"
        return None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for SLURM's client commands (sbatch, squeue, ...): this cluster's slurm.conf."""
        env = dict(os.environ if base is None else base)
        env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}  # not a job's variables
        path = env.get("PATH", "")
        for extra in ("/usr/sbin", "/usr/bin", "/sbin"):
            if extra not in path.split(":"):
                path = f"{path}:{extra}" if path else extra
        return {**env, "SLURM_CONF": str(self.conf), "PATH": path}

    # -- starting ---------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60) -> None:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> None:
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            (self.root / sub).chmod(0o755)  # munged's socket folder must be reachable by every user
        self.root.chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self._write_conf()
        m = self.root / "munge"
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={m / 'munge.sock'}",
                               f"--key-file={key}", f"--pid-file={m / 'munged.pid'}", f"--seed-file={m / 'seed'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}"])
        self._wait(lambda: (m / "munge.sock").exists(), timeout_s, "munged did not create its socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
        self._wait(self._controller_answers, timeout_s, "slurmctld does not answer")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, timeout_s, f"node {self.node} did not become idle")

    def _write_conf(self) -> None:
        r = self.root
        lines = [
            "ClusterName=ddpevaltest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire: also how long a requeued job waits before it may start again (120 s by default).
            f"AuthInfo=socket={r / 'munge' / 'munge.sock'},cred_expire=10",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"ProctrackType=proctrack/{self.proctrack}",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            f"KillWait={self.kill_wait_s}",
            "MinJobAge=600",
            "MessageTimeout=10",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "Waittime=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # cgroup v1 (freezer) where it is mounted, as on most clusters of SLURM 22.05's time.
        version = "v1" if Path("/sys/fs/cgroup/freezer").is_dir() else "v2"
        (r / "cgroup.conf").write_text(f"CgroupPlugin=cgroup/{version}\nCgroupMountpoint=/sys/fs/cgroup\n"
                                       "ConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.root / "log" / f"{name}.stdout").open("wb")
        # A new session: a test's Ctrl-C does not reach the daemons before stop() does.
        self._procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=self.env(), start_new_session=True)

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise SlurmUnavailable(f"{dead[0]} exited: {self.log_tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"{what} within {timeout_s:.0f} s: {self.log_tail()}")

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        done = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def _controller_answers(self) -> bool:
        return self.run("scontrol", "ping", check=False).returncode == 0

    def _node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return done.returncode == 0 and done.stdout.strip().startswith("idle")

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts) or "(no log lines)"

    # -- jobs -------------------------------------------------------------------------------------------
    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, StdOut, ...)."""
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        fields = {}
        for item in text.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_for(self, job_id: str, states: set[str], timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {info.get('JobState')}, not {sorted(states)}, after "
                                   f"{timeout_s:.0f} s: {info}\n{self.log_tail()}")
            time.sleep(0.3)

    # -- stopping ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        try:
            if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
                self.run("scancel", "--full", "--signal=KILL", "--state=RUNNING", "--user=root", check=False)
                self.run("scancel", "--user=root", check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                    time.sleep(0.3)
        finally:
            for name in reversed(DAEMONS):
                proc = self._procs.pop(name, None)
                if proc is None or proc.poll() is not None:
                    continue
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def leftover_processes(self) -> list[str]:
        """Processes still running from this cluster (its daemons, job steps): should be none after stop()."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in environ or str(self.root) in cmdline:
                found.append(f"{proc.name}: {cmdline.strip()}")
        return found
