"""Start, inspect and stop the EMULATED Kubernetes cluster of ``server.py``.

Tests use it through the ``kube`` fixture (conftest.py): the real
``dask_kubernetes.operator.KubeCluster`` and the real Dask operator talk to
it as to any Kubernetes API server, through the kubeconfig it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "DASKFLOW_EMULATED_KUBERNETES"


class EmulatedKubernetes:
    def __init__(self, workdir: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        with open(os.path.join(workdir, "server.log"), "ab") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), workdir],
                                         env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        ready = os.path.join(workdir, "ready")
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulated Kubernetes API did not start; see {workdir}/server.log")
            time.sleep(0.05)
        with open(ready) as f:
            self.url = f.read().strip()
        self.wait_for_operator()

    # -- looking inside -------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:  # noqa: S310 - our own server
            return json.load(resp)

    def names(self, path: str) -> list[str]:
        return [o["metadata"]["name"] for o in self.get(path)["items"]]

    def daskclusters(self) -> list[str]:
        return self.names("/apis/kubernetes.dask.org/v1/daskclusters")

    def pods(self) -> list[str]:
        return self.names("/api/v1/pods")

    def running_pods(self) -> list[str]:
        """Pods whose container process is alive."""
        out = []
        for pod in self.get("/api/v1/pods")["items"]:
            pid = pod["metadata"].get("annotations", {}).get("emulated.kubernetes/pid")
            with contextlib.suppress(psutil.Error):
                if pid and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE:
                    out.append(pod["metadata"]["name"])
        return out

    def processes(self) -> list[psutil.Process]:
        """Live pod processes of this emulated cluster (the operator excluded)."""
        out = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                env = proc.environ()
                if env.get(MARKER) == self.url and "HOSTNAME" in env and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def empty(self) -> bool:
        return not self.daskclusters() and not self.pods() and not self.processes()

    def wait_until_empty(self, timeout: float) -> float | None:
        """Seconds until no DaskCluster, pod or pod process is left; None if never."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.empty():
                return time.monotonic() - start
            time.sleep(0.1)
        return None

    def wait_for_operator(self, timeout: float = 180) -> None:
        """Wait until the Dask operator watches DaskClusters."""
        deadline = time.monotonic() + timeout
        while "daskclusters.kubernetes.dask.org" not in self.get("/emulator/watches"):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Dask operator did not start; see {self.workdir}/operator.log")
            time.sleep(0.1)

    def delete_all(self) -> None:
        """Delete every DaskCluster (as ``kubectl delete daskclusters --all`` would)."""
        for name in self.daskclusters():
            req = urllib.request.Request(
                f"{self.url}/apis/kubernetes.dask.org/v1/namespaces/default/daskclusters/{name}",
                method="DELETE")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(req, timeout=10).close()  # noqa: S310

    # -- ending -------------------------------------------------------------------------
    def stop(self) -> None:
        """End the emulator, its operator and every pod process, whatever their state."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        url = getattr(self, "url", None)
        if url:
            for proc in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    if proc.environ().get(MARKER) == url:
                        proc.kill()
