"""What the live progress display costs: a map of N trivial tasks on one
LocalCluster (2 workers x 1 thread), with progress off and with the
terminal display forced on (drawn into a throwaway stream), alternating.

    python benchmarks/progress.py [--n 20000] [--reps 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import time

from distributed import Client, LocalCluster

import daskflow as df


@df.task
def inc(x: int) -> int:
    return x + 1


@df.flow
def mapped(n: int):
    return inc.map(range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.getLogger("daskflow").setLevel(logging.WARNING)
    times: dict[str, list[float]] = {"off": [], "on": []}
    sink = io.StringIO()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        mapped.run(100, cluster=client, progress=False)  # warm-up
        for _ in range(args.reps):
            for name, on in (("off", False), ("on", True)):
                t0 = time.perf_counter()
                with contextlib.redirect_stderr(sink):  # the display draws here
                    mapped.run(args.n, cluster=client, progress=on)
                times[name].append(time.perf_counter() - t0)
                sink.seek(0)
                sink.truncate()
                print(f"{name:>4}: {times[name][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"N={args.n}: progress off {med['off']:.2f} s, on {med['on']:.2f} s "
          f"({med['on'] / med['off']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "runs": times, "median": med}, f, indent=1)


if __name__ == "__main__":
    main()
