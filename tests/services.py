"""Real system services for the provider tests, each started by the test
session in a folder of its own and ended by the pids it recorded.

- :class:`Sshd`: Debian's OpenSSH server on 127.0.0.1 (its own config, host
  key and authorized keys; never ``~/.ssh``), logging in a throwaway
  non-root user made for the session (as root, sshd cannot deliver the close
  signal and remote processes would linger).

Leftovers are found by what was recorded: the pid of each daemon, and the uid
of the throwaway user (no other process runs as it), never by matching
command lines other processes share.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _others_can_run(path: str) -> bool:
    """Whether a user with no special rights can execute ``path``."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i])).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o001)


def _others_can_read(path: str) -> bool:
    """Whether a user with no special rights can reach and list ``path``."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        mode = os.stat(os.sep.join(parts[:i]) or os.sep).st_mode
        if not mode & 0o001 or (i == len(parts) and not mode & 0o004):
            return False
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # no bytes copied, and nothing of the original changes
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


_NOT_COPIED = ("__pycache__", ".venv", ".git")


def _copied_with(path: str, parent: str) -> bool:
    rel = os.path.relpath(path, parent)
    return rel == "." or (not rel.startswith("..")
                          and not set(rel.split(os.sep)) & set(_NOT_COPIED))


def shared_view(paths: list[str], root: str) -> list[str]:
    """``paths``, where every one another user cannot reach is replaced by a
    hard-linked copy under ``root`` (world-readable; removed with it).

    A checkout in a folder only its owner can read (mode 0700, as many
    home folders are) is out of the throwaway user's reach, and so are its
    virtualenv and its tests.  Hard links share the files' contents (mode
    0644 as git and pip leave them) through a path others can traverse,
    without touching the checkout's permissions.
    """
    shared = os.path.join(root, "shared")
    hidden = sorted({p for p in paths if p and not _others_can_read(p)}, key=len)
    copied: list[str] = []
    for path in hidden:  # parents first: a folder inside one copied is copied with it
        if not any(_copied_with(path, c) for c in copied):
            shutil.copytree(path, shared + path, symlinks=True, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns(*_NOT_COPIED))
            copied.append(path)
    if copied:
        for dirpath, _dirs, _files in os.walk(shared):
            os.chmod(dirpath, 0o755)
    return [shared + p if p in hidden else p for p in paths]


def python_for_others() -> tuple[str, list[str]]:
    """An interpreter the throwaway user can run, and what it needs on its path.

    This session's own if others can reach it; otherwise (a Python under
    /root, as with pyenv) the system's ``python3.X`` of the same minor version,
    given this session's site-packages (wheels for the same ABI) and the repo.
    """
    if _others_can_run(sys.executable):
        return sys.executable, [os.path.dirname(REPO) and REPO]
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.path.exists(system):
        raise RuntimeError(f"{sys.executable} is not reachable by other users and there is no "
                           f"{system} (apt-get install python3)")
    import sysconfig

    return system, [sysconfig.get_paths()["purelib"], REPO]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


def seconds_until(done, timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until ``done()`` holds, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if done():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ThrowawayUser:
    """A system user for this session only; removed with everything it runs."""

    def __init__(self, root: str) -> None:
        self.name = f"dft{uuid.uuid4().hex[:8]}"
        self.home = os.path.join(root, "home")
        os.makedirs(self.home)
        subprocess.run(["useradd", "-M", "-d", self.home, "-s", "/bin/sh", self.name], check=True)
        # '*' (no password, not locked): OpenSSH refuses a locked ('!') account
        subprocess.run(["usermod", "-p", "*", self.name], check=True)
        self.uid = pwd.getpwnam(self.name).pw_uid
        os.chown(self.home, self.uid, -1)

    def processes(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["uids"]):
            uids = proc.info.get("uids")
            if uids is not None and uids.real == self.uid:
                out.append(proc)
        return out

    def wait_no_processes(self, timeout: float) -> float | None:
        return seconds_until(lambda: not [p for p in self.processes() if _running(p)], timeout)

    def remove(self) -> None:
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        subprocess.run(["userdel", self.name], check=False, capture_output=True)


class Sshd:
    """A throwaway sshd on 127.0.0.1 logging in one throwaway user by key."""

    def __init__(self, tests_dir: str) -> None:
        # World-traversable: sshd reads the authorized keys as the user.
        self.root = tempfile.mkdtemp(prefix="daskflow-sshd-")
        os.chmod(self.root, 0o755)
        self.proc: subprocess.Popen | None = None
        self.user = ThrowawayUser(self.root)
        try:
            self._start(tests_dir)
        except BaseException:
            self.close()
            raise

    def _start(self, tests_dir: str) -> None:
        root = self.root
        self.scratch = os.path.join(self.user.home, "scratch")
        os.makedirs(self.scratch)
        os.chown(self.scratch, self.user.uid, -1)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(root, key)], check=True)
        shutil.copy(os.path.join(root, "client_key.pub"), os.path.join(root, "authorized_keys"))
        os.chmod(os.path.join(root, "authorized_keys"), 0o644)
        self.client_key = os.path.join(root, "client_key")
        self.port = free_port()
        self.python, path = python_for_others()
        path = shared_view([*tests_dir.split(os.pathsep), *path], root)
        env = {"HOME": self.user.home, "DASK_TEMPORARY_DIRECTORY": self.scratch,
               "PYTHONPATH": os.pathsep.join(path),
               "DASKFLOW_TESTS_HOME": self.user.home}
        config = os.path.join(root, "sshd_config")
        with open(config, "w") as f:
            f.write("\n".join([
                f"Port {self.port}", "ListenAddress 127.0.0.1",
                f"HostKey {os.path.join(root, 'host_key')}",
                f"AuthorizedKeysFile {os.path.join(root, 'authorized_keys')}",
                f"PidFile {os.path.join(root, 'sshd.pid')}",
                f"AllowUsers {self.user.name}", "StrictModes no", "UsePAM no",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes", "PermitRootLogin no",
                "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()), ""]))
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation folder sshd requires
        with open(os.path.join(root, "sshd.log"), "w") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config],
                                         stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port, self.proc, 20, "sshd")

    def connect_options(self) -> dict:
        return {"username": self.user.name, "port": self.port, "known_hosts": None,
                "client_keys": [self.client_key]}

    def close(self) -> None:
        stop(self.proc)
        self.user.remove()
        shutil.rmtree(self.root, ignore_errors=True)


class GatewayServer:
    """A real dask-gateway-server (its wheel bundles the Go proxy) on
    127.0.0.1: the unsafe local backend (clusters are processes of this
    user) and the simple authenticator, with an ``idle_timeout`` cluster
    option as a real deployment offers it."""

    def __init__(self, python: str, tests_dir: str) -> None:
        self.root = tempfile.mkdtemp(prefix="daskflow-gateway-")
        self.proc: subprocess.Popen | None = None
        try:
            self._start(python, tests_dir)
        except BaseException:
            self.close()
            raise

    def _start(self, python: str, tests_dir: str) -> None:
        self.api_port, self.proxy_port = free_port(), free_port()
        config = os.path.join(self.root, "gateway_config.py")
        clusters = os.path.join(self.root, "clusters")
        os.makedirs(clusters)
        scratch = os.path.join(self.root, "scratch")  # dask's, never /tmp/dask-scratch-space
        os.makedirs(scratch)
        env = {"PYTHONPATH": tests_dir, "DASKFLOW_TESTS_HOME": os.environ.get("HOME", ""),
               "HOME": os.environ.get("HOME", ""), "DASK_TEMPORARY_DIRECTORY": scratch}
        with open(config, "w") as f:
            f.write(f"""
from dask_gateway_server.options import Options, Float, Integer
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.DaskGateway.address = "127.0.0.1:{self.api_port}"
c.Proxy.address = "127.0.0.1:{self.proxy_port}"
c.LocalBackend.clusters_directory = {clusters!r}
c.ClusterConfig.scheduler_cmd = [{python!r}, "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = [{python!r}, "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.worker_threads = 1
c.ClusterConfig.environment = {env!r}
c.DBBackendBase.cluster_status_period = 0.5
c.DBBackendBase.worker_status_period = 0.5
c.DBBackendBase.check_timeouts_period = 0.5
c.Backend.cluster_options = Options(
    Float("idle_timeout", 0.0, label="Idle timeout (s), 0 for none"),
    Integer("worker_threads", 1, min=1, max=2, label="Threads per worker"),
    handler=lambda options: {{"idle_timeout": options.idle_timeout,
                              "worker_threads": options.worker_threads}},
)
""")
        self.log = os.path.join(self.root, "gateway.log")
        # The local backend passes its own PYTHONPATH on to the cluster
        # processes, over ClusterConfig.environment's: give it the tests' too.
        path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([python, "-m", "dask_gateway_server", "-f", config],
                                         cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": path})
        self.address = f"http://127.0.0.1:{self.proxy_port}"
        self._wait_healthy(60)

    def _wait_healthy(self, timeout: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dask-gateway-server exited: {open(self.log).read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"dask-gateway-server not healthy within {timeout}s")

    def processes(self) -> list[psutil.Process]:
        """The cluster processes the gateway started (its descendants)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        return [p for p in children if _running(p) and "dask-gateway-proxy" not in _name(p)]

    def wait_no_clusters(self, timeout: float) -> float | None:
        return seconds_until(lambda: not self.processes(), timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            children = []
            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            stop(self.proc, 20)
            for child in children:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


class Slurm:
    """A real single-node Slurm (Debian's slurm-wlm) with its own munged,
    configured in a folder of its own: node = this host at 127.0.0.1,
    proctrack/linuxproc, task/none, no accounting.  ``env`` is what a client
    (sbatch, squeue, scancel, and so dask-jobqueue) needs to reach it."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="daskflow-slurm-")
        os.chmod(self.root, 0o755)
        self.procs: dict[str, subprocess.Popen] = {}
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _munged(self) -> None:
        root = os.path.join(self.root, "munge")
        os.makedirs(root)
        munge = pwd.getpwnam("munge")
        key = os.path.join(root, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        for path in (root, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        os.chmod(root, 0o755)
        self.munge_socket = os.path.join(root, "munge.socket")
        # setpriv (not su/runuser): the pid we record is the daemon's own.
        self.procs["munged"] = subprocess.Popen(
            ["setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}", "--init-groups",
             "munged", "-F", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
             f"--pid-file={os.path.join(root, 'munged.pid')}",
             f"--log-file={os.path.join(root, 'munged.log')}",
             f"--seed-file={os.path.join(root, 'munged.seed')}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.munge_socket):
            if self.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("munged did not start: " + _tail(os.path.join(root, "munged.log")))
            time.sleep(0.05)

    def _start(self) -> None:
        self._munged()
        root = self.root
        for sub in ("state", "spool", "jobs"):
            os.makedirs(os.path.join(root, sub))
        self.host = socket.gethostname().split(".")[0]
        memory = int(psutil.virtual_memory().total / 2**20 * 0.5)
        ctld_port, slurmd_port = free_port(), free_port()
        self.conf = os.path.join(root, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                f"ClusterName=daskflow{uuid.uuid4().hex[:6]}",
                f"SlurmctldHost={self.host}(127.0.0.1)",
                f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
                "AuthType=auth/munge", "CredType=cred/munge",
                f"AuthInfo=socket={self.munge_socket}",
                "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
                "SlurmUser=root", "SlurmdUser=root",
                "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
                "JobAcctGatherType=jobacct_gather/none",
                f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
                "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=2",
                "MinJobAge=2",
                f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} "
                f"RealMemory={memory} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {"SLURM_CONF": self.conf}
        env = {**os.environ, **self.env}
        self.procs["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i", "-f", self.conf], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(ctld_port, self.procs["slurmctld"], 30, "slurmctld")
        self.procs["slurmd"] = subprocess.Popen(
            ["slurmd", "-D", "-f", self.conf, "-N", self.host], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while "idle" not in self.run("sinfo", "-h", "-o", "%t"):
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: " + _tail(os.path.join(root, f"{name}.log")))
            if time.monotonic() > deadline:
                raise RuntimeError("the Slurm node did not become idle: "
                                   + _tail(os.path.join(root, "slurmd.log")))
            time.sleep(0.2)

    def run(self, *cmd: str) -> str:
        result = subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=30)
        return result.stdout

    def jobs(self) -> list[str]:
        """Job ids still queued or running (any state squeue lists)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def wait_no_jobs(self, timeout: float) -> float | None:
        return seconds_until(lambda: not self.jobs(), timeout, interval=0.2)

    def close(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.jobs()
            if jobs:
                self.run("scancel", *jobs)
            self.wait_no_jobs(30)  # before slurmd goes, so that it ends their processes
        for name in ("slurmd", "slurmctld", "munged"):
            stop(self.procs.get(name), 20)
        shutil.rmtree(self.root, ignore_errors=True)


def _tail(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()[-2000:]
    except OSError:
        return "(no log)"


class MotoS3:
    """moto's standalone S3 API server on 127.0.0.1 (a subprocess, as s3fs's
    own tests run it), with one bucket; ``options`` are the fsspec storage
    options that reach it."""

    BUCKET = "daskflow-tests"

    def __init__(self) -> None:
        import sys

        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=self.log, start_new_session=True)
        self.options = {"endpoint_url": f"http://127.0.0.1:{self.port}", "key": "testing",
                        "secret": "testing"}
        try:
            wait_port(self.port, self.proc, 60, "moto_server")
            import s3fs

            s3fs.S3FileSystem(**self.options, skip_instance_cache=True).mkdir(self.BUCKET)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        stop(self.proc)
        self.proc = None
        self.log.close()
