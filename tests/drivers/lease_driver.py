"""A driver that attaches to a scheduler, takes a lease on it, and waits
(to be killed with SIGKILL by the test)."""

import sys
import time

from distributed import Client

from daskflow.clusters.lease import Lease

if __name__ == "__main__":
    address, duration, ready = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    client = Client(address, set_as_default=False)
    client.register_plugin(Lease(client.id, duration), name=Lease.name)
    open(ready, "w").close()
    while True:
        time.sleep(1)
