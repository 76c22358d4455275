"""A driver that starts a temporary df.clusters.Coiled (the test stand-in),
writes what it started, and waits to be killed."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "standins"))

import daskflow as df  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[1]
    spec = df.clusters.Coiled(n_workers=1).open()
    with spec as client:
        with open(out + ".tmp", "w") as f:
            json.dump({"name": spec.name, "address": client.scheduler.address}, f)
        os.replace(out + ".tmp", out)
        while True:
            time.sleep(0.1)
