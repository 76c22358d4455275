"""Write figures that runs produced into the README, between their markers.

    python tools/figures.py            # every block whose results file exists

- ``<!-- soak -->``: from ``benchmarks/results/soak.json`` (``benchmarks/soak.py --json``).

The structure figures are written by ``tools/structure.py --readme``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def write_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + "\n" + text[stop:]


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    soak = ROOT / "benchmarks" / "results" / "soak.json"
    if soak.exists():
        text = write_block(text, "soak", soak_table(json.loads(soak.read_text())))
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
