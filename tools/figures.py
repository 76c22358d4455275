"""Write figures that runs produced into the README and the docs, between their markers.

    python tools/figures.py                       # every block whose results file exists
    python tools/figures.py --tests make-test.log  # and the test run's figures

- ``<!-- waits -->``: from ``benchmarks/results/waits.json`` (``benchmarks/waits.py --json``);
- ``<!-- records -->``: from ``benchmarks/results/records.json`` (``benchmarks/records.py --json``);
- ``<!-- soak -->``: from ``benchmarks/results/soak.json`` (``benchmarks/soak.py --json``);
- ``<!-- chunks -->``: from ``benchmarks/results/chunks.json`` (``benchmarks/chunks.py``);
- ``<!-- million -->``: from ``benchmarks/results/million.json`` (``benchmarks/million.py``);
- ``<!-- cache -->``: from ``benchmarks/results/cache.json`` (``benchmarks/cache.py``);
- ``<!-- tests -->`` and ``<!-- shutdown -->``: from the output of ``make test``
  (its last line and its "measured shutdown times" section).

Each block is written in the one page that holds its markers (README.md or a
page of docs/, see ``tools/blocks.py``): today waits in docs/tour/waits.md,
records and soak in docs/run-state.md, chunks and million in docs/tour/mapping.md,
cache in docs/performance.md, shutdown in docs/shutdown.md, tests in README.md.

The structure figures are written by ``tools/structure.py --write``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import blocks

ROOT = Path(__file__).resolve().parents[1]


def soak_table(figures: dict) -> str:
    rows = ["| system | flow | runs | completed | failed |", "|---|---|---|---|---|"]
    for kind, c in sorted(figures["daskflow"].items()):
        rows.append(f"| daskflow | {kind} | {c['runs']} | {c['completed']} | {c['failed']} |")
    raw = figures["raw dask"]
    rows.append(f"| raw Dask | map + sum | {raw['runs']} | {raw['completed']} | "
                f"{raw['runs'] - raw['completed']} |")
    problems = figures["problems"]
    return "\n".join(rows) + (
        f"\n\n{figures['seconds']:.0f} s, seed {figures['seed']}, {figures['drivers']} drivers, "
        f"{figures['kills']} workers SIGKILLed; a lone tag-limited run afterwards took "
        f"{figures['recovery_s']:.2f} s; invariants broken: "
        + ("none" if not problems else "; ".join(problems)) + ".")


def waits_table(figures: dict) -> str:
    """The table of ``benchmarks/waits.py --json``."""
    lines = ["| workload | system | median | min-max | vs |", "|---|---|---|---|---|"]
    for r in figures["rows"]:
        lines.append(f"| {r['workload']} | {r['system']} | {r['median_ms']:.1f} ms | "
                     f"{r['min_ms']:.1f}-{r['max_ms']:.1f} ms | {r['vs_base']:.2f}x |")
    return "\n".join(lines) + f"\n\n({figures['cluster']}, {figures['when']}.)"


def records_table(figures: dict) -> str:
    """The table of ``benchmarks/records.py --json``."""
    lines = ["| workload | records on | records off | cost |", "|---|---|---|---|"]
    big = None
    for r in figures["rows"]:
        if "records_on_s" not in r:
            big = r
            continue
        lines.append(f"| {r['workload']} ({r['runs']} runs each, alternating) | "
                     f"{1000 * r['records_on_s']:.1f} ms | {1000 * r['records_off_s']:.1f} ms | "
                     f"{100 * r['overhead']:+.1f}% |")
    text = "\n".join(lines)
    if big is not None:
        text += (f"\n\nThe final record of a 100k-element run ({big['run_s']:.1f} s on sync) is "
                 f"{big['bytes'] / 2**20:.1f} MiB and takes {big['write_s']:.2f} s to write.")
    return text + f"\n\n({figures['cluster']}, {figures['when']}.)"


def chunks_table(figures: dict) -> str:
    """The table of ``benchmarks/chunks.py``."""
    lines = ["| workload | system | median |", "|---|---|---|"]
    for name, seconds in figures["median_seconds"].items():
        workload, system = name.split(" ", 1)
        lines.append(f"| {workload} | {system} | {seconds:.2f} s |")
    return "\n".join(lines) + (
        f"\n\nW5 ({figures['n']:,} elements of 50 us, then a sum): daskflow takes "
        f"{figures['w5_ratio_to_faster_expert']:.2f}x the time of the faster of hand-chunked "
        f"`client.map` and `dask.bag`; its first run, with its pilot, took "
        f"{figures['w5_first_run_with_pilot']:.2f} s. W4 (three chained maps over 5,000): "
        f"{figures['w4_ratio_to_raw']:.2f}x raw futures. Medians of {figures['reps']} runs, "
        f"alternating, on one LocalCluster of 2 workers x 1 thread ({figures['machine']}); the "
        "raw per-element row ran 2,000 elements and is scaled to 20,000.")


def million_text(f: dict) -> str:
    """The sentence of ``benchmarks/million.py``."""
    return (f"A map over {f['n']:,} elements of a trivial function, then a sum: "
            f"{f['first_run_s']:.1f} s the first time (with its pilot), {f['second_run_s']:.1f} s "
            f"the next (`dask.bag`: {f['bag_s']:.1f} s); building the flow took "
            f"{f['build_s']:.2f} s and compiling it {f['compile_s']:.2f} s "
            f"({f['dask_tasks']:,} Dask tasks); the driver's peak memory was "
            f"{f['driver_peak_rss_bytes'] / 2**30:.2f} GiB ({f['machine']}, LocalCluster of "
            f"2 workers x 1 thread). Every element is a task run with its own state: about "
            f"{f['second_run_s'] * 2 / f['n'] * 1e6:.0f} us of a worker's time per element "
            "(the run's time x 2 workers / elements), which a trivial function cannot hide.")


def cache_table(f: dict) -> str:
    """The table of ``benchmarks/cache.py``."""
    med = f["median_seconds"]
    base = med["no cache"]
    what = {"no cache": "no cache",
            "cache, 1st run": "cache, 1st run (every result written)",
            "cache, rerun": "cache, rerun (the sum read, the map not needed)",
            "map cached, rerun": "map cached, rerun (every element read, in "
                                 f"{f['loaded_in_chunks']} chunks; the sum run)"}
    rows = [f"| N={f['n']:,} map + sum | median | vs no cache |", "|---|---|---|"]
    rows += [f"| {what.get(k, k)} | {v:.2f} s | {v / base:.2f}x |" for k, v in med.items()]
    return "\n".join(rows) + (f"\n\n(Medians of {f['reps']}, variants alternating, "
                              f"{f['cluster']}, {f['when']}.)")


def test_figures(log: str) -> tuple[str, str]:
    """The suite's summary line, and the shutdown times, from ``make test``'s output."""
    lines = [line for line in log.splitlines() if " passed" in line and " in " in line
             and line.startswith("=")]
    if not lines:
        raise SystemExit("no pytest summary line in the log")
    last = lines[-1]

    def count(word: str) -> int:
        found = re.search(rf"(\d+) {word}", last)
        return int(found.group(1)) if found else 0

    seconds = float(re.search(r" in ([\d.]+)s", last).group(1))  # type: ignore[union-attr]
    failed = count("failed") + count("error")
    notebooks = re.findall(r"(\d+) notebooks executed without error", log)
    summary = (f"{count('passed')} passed"
               + (f", {failed} FAILED" if failed else "")
               + f" and {count('skipped')} opt-in skipped in {seconds:.0f} s "
               "on 2 cores" + (f" ({notebooks[-1]} notebooks executed among them)"
                               if notebooks else "") + ", on a clean clone, its last run.")
    section = log.split("measured shutdown times", 1)[-1].splitlines()[1:]
    rows = ["| scenario | time to shut down |", "|---|---|"]
    for line in section:
        match = re.fullmatch(r"(.+): ([\d.]+)s", line.strip())
        if not match:
            break
        rows.append(f"| {match.group(1)} | {float(match.group(2)):.2f} s |")
    return summary, "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", help="the saved output of `make test`")
    args = parser.parse_args(argv)
    written = {}
    for block, text in (("waits", waits_table), ("records", records_table),
                        ("chunks", chunks_table), ("million", million_text),
                        ("soak", soak_table), ("cache", cache_table)):  # each from benchmarks/results/<block>.json
        path = ROOT / "benchmarks" / "results" / f"{block}.json"
        if path.exists():
            written[block] = text(json.loads(path.read_text()))
    if args.tests:
        summary, shutdown = test_figures(Path(args.tests).read_text(errors="replace"))
        written["tests"] = summary
        written["shutdown"] = shutdown
    for name, body in written.items():
        path = blocks.write(ROOT, name, body)
        print(f"<!-- {name} --> in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
