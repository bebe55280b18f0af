"""A single-node SLURM cluster (munged, slurmctld, slurmd) started by hand, without systemd, as root.

Debian's ``munge slurmctld slurmd slurm-client`` are installed when missing. Every daemon writes its
PID file under :attr:`SingleNodeSlurm.root`; :meth:`stop` cancels the jobs left and kills each daemon
by that PID (then waits for it), so nothing outlives the test even when it fails. Facts this relies
on: ``munged`` must run as user ``munge`` with ``/run/munge`` made beforehand; the config must be at
``/etc/slurm/slurm.conf`` (the job-step plugin drops ``SLURM_CONF``); there is no accounting
database, so status comes from ``squeue`` and finished jobs stay visible for ``MinJobAge`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.debian import apt_install

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
CONF = Path("/etc/slurm/slurm.conf")
PARTITION = "debug"


def available() -> str | None:
    """Why a cluster cannot be started here, or None when it can (root, and apt-get or the daemons)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "needs Debian's slurm packages or apt-get"
    return None


def install() -> None:
    """apt-get install the daemons and clients unless they are already there."""
    if all(shutil.which(t) for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue")):
        return
    apt_install(*PACKAGES)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {seconds} s waiting for {what}")


def _ok(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


class SingleNodeSlurm:
    """``with SingleNodeSlurm(root) as cluster:`` — a one-node cluster with partition ``debug``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.pidfiles = {name: self.root / "run" / f"{name}.pid" for name in ("munged", "slurmctld", "slurmd")}
        self.log = self.root / "log"
        self._conf_backup: bytes | None = None

    # ------------------------------------------------------------------------------------------
    def start(self) -> SingleNodeSlurm:
        """Start the daemons; ``root`` and its parents must be searchable by user ``slurm``."""
        for d in ("state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "state", "slurm", "slurm")
        shutil.chown(self.log, "slurm", "slurm")
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.is_file() or key.stat().st_size == 0:
            subprocess.run(["mungekey", "-c", "-f"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
        munge_pid = self.root / "run" / "munged.pid"
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file", "/run/munge/vlmattn-ci.pid"],
                       check=True, capture_output=True)
        _wait(lambda: Path("/run/munge/vlmattn-ci.pid").is_file(), 10, "munged's PID file")
        shutil.copy("/run/munge/vlmattn-ci.pid", munge_pid)
        _wait(lambda: _ok("bash", "-c", "munge -n | unmunge"), 10, "munge")
        if CONF.exists():
            self._conf_backup = CONF.read_bytes()
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(self.config())
        subprocess.run(["slurmctld"], check=True, capture_output=True)
        subprocess.run(["slurmd"], check=True, capture_output=True)
        try:
            _wait(lambda: subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
                  == "idle", 60, "the node to be idle")
        except TimeoutError as e:
            tails = {f.name: f.read_text().splitlines()[-3:] for f in sorted(self.log.glob("*.log"))}
            raise TimeoutError(f"{e}; logs: {tails}") from None
        return self

    def config(self) -> str:
        r = self.root
        mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                       if ln.startswith("MemTotal"))) // 1024
        return f"""ClusterName=vlmattn-ci
SlurmctldHost={self.host}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pidfiles['slurmctld']}
SlurmdPidFile={self.pidfiles['slurmd']}
SlurmctldLogFile={self.log}/slurmctld.log
SlurmdLogFile={self.log}/slurmd.log
SlurmctldDebug=info
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
ReturnToService=2
MpiDefault=none
NodeName={self.host} CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    # ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel leftover jobs and kill every daemon started here, by PID; restore slurm.conf."""
        subprocess.run(["scancel", "--user", "root"], capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            path = self.pidfiles[name]
            if not path.is_file():
                continue
            try:
                pid = int(path.read_text().split()[0])
            except (ValueError, IndexError):
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.2)
                if not _alive(pid):
                    break
        Path("/run/munge/vlmattn-ci.pid").unlink(missing_ok=True)
        if self._conf_backup is not None:
            CONF.write_bytes(self._conf_backup)
        else:
            CONF.unlink(missing_ok=True)

    def daemon_pids(self) -> list[int]:
        return [int(p.read_text().split()[0]) for p in self.pidfiles.values() if p.is_file()]

    def __enter__(self) -> SingleNodeSlurm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped: the daemons detach from us, so init reaps them) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[-1][:1] != "Z"
