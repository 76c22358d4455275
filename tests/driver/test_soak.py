"""A short chaos soak (``benchmarks/soak.py`` is the long one): three drivers
run flows on one adaptive LocalCluster while its workers are SIGKILLed every
3-6 s (seeded), and every invariant is checked: each run ends, each Completed
value is right, each failure says why, each resource setup is cleaned up once
or its loss is visible, the tag limit holds and recovers, the result store
holds no partial record."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the workers spawned inherit it

import soak  # noqa: E402


def test_a_short_chaos_soak_holds_every_invariant():
    figures = soak.soak(seconds=25, seed=7, drivers=3)
    assert figures["problems"] == [], figures
    assert figures["kills"] >= 3, figures
    assert set(figures["daskflow"]) == {"mapped", "opened", "cached", "limited"}, figures
    assert all(c["runs"] >= 1 for c in figures["daskflow"].values()), figures
    assert figures["recovery_s"] < 10, figures
