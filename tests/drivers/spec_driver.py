"""A driver process for shutdown tests of any provider: opens the pickled
spec it is given, writes what it started, then ends as told (normal, raise,
or waits inside a flow run to be signalled)."""

import json
import os
import pickle
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from common_tasks import long_flow

    mode, out, spec_file = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(spec_file, "rb") as f:
        spec = pickle.load(f)
    handle = spec.open()
    with handle as client:
        with open(out + ".tmp", "w") as f:
            json.dump({"name": handle.name, "id": handle.record_id,
                       "address": client.scheduler.address, **handle.extra}, f)
        os.replace(out + ".tmp", out)
        if mode == "raise":
            raise RuntimeError("the driver failed")
        if mode == "wait":
            long_flow(120.0, cluster=client)
