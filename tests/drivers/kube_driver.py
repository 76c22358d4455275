"""A driver that starts a temporary df.clusters.Kubernetes (on the emulated
cluster its KUBECONFIG names), writes what it started, then ends as told:
normal, raise, or waits inside a flow run to be signalled."""

import json
import os
import sys

import dask

import daskflow as df

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from common_tasks import long_flow  # importable by the pods too

    mode, out = sys.argv[1], sys.argv[2]
    with dask.config.set({"kubernetes.scheduler-service-type": "LoadBalancer"}):
        spec = df.clusters.Kubernetes(n_workers=1, lease=sys.argv[3] if len(sys.argv) > 3 else "3s").open()
        with spec as client:
            with open(out + ".tmp", "w") as f:
                json.dump({"name": spec.name, "address": client.scheduler.address}, f)
            os.replace(out + ".tmp", out)
            if mode == "raise":
                raise RuntimeError("the driver failed")
            if mode == "wait":
                long_flow(120.0, cluster=client)
