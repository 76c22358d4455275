"""A driver process for shutdown tests: starts df.clusters.Local, then ends
as told (normal, raise, or waits inside a flow run to be signalled)."""

import json
import os
import sys

import daskflow as df

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from common_tasks import long_flow

    mode, out = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:  # attach to an existing scheduler instead of starting one
        spec = df.clusters.Address(sys.argv[3]).open()
    else:
        spec = df.clusters.Local(n_workers=2, threads_per_worker=1, dashboard_address=None).open()
    with spec as client:
        pids = sorted(set(client.run(os.getpid).values()))
        with open(out + ".tmp", "w") as f:
            json.dump({"pids": pids, "name": spec.name, "address": client.scheduler.address}, f)
        os.replace(out + ".tmp", out)
        if mode == "raise":
            raise RuntimeError("the driver failed")
        if mode == "wait":  # on a shared cluster keep the orphaned task short
            long_flow(3.0 if len(sys.argv) > 3 else 60.0, cluster=client)
