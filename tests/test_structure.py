"""The package's structure holds its figures (tools/structure.py prints them):
arrows go one way, few lazy imports, no reaching into another module's
private names, no module over 700 lines, no function over 60."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import structure  # noqa: E402

# Each lazy import of our own modules, and why it stays lazy.
ALLOWED_LAZY = {
    # the plugins import distributed; `import daskflow` does not
    ("daskflow.events.monitor", "daskflow.events.plugins"),
    # the lease is a distributed SchedulerPlugin: imported once a cluster starts
    ("daskflow.clusters.base", "daskflow.clusters.lease"),
    # dask-kubernetes is an optional dependency
    ("daskflow.clusters.providers", "daskflow.clusters.kube"),
}


def test_the_figures_hold():
    f = structure.figures(ROOT)
    assert f["cycles"] == [], f["cycles"]
    assert len(f["lazy"]) <= 8, f["lazy"]
    assert {(m, t) for m, _, t in f["lazy"]} <= ALLOWED_LAZY, f["lazy"]
    assert len(f["private"]) <= 3, f["private"]
    assert f["long_modules"] == [], f["long_modules"]
    assert f["long_functions"] == [], f["long_functions"]


def test_the_script_finds_a_cycle_and_a_lazy_import(tmp_path):
    """The measure itself can fail: a made-up package with a cycle through a
    function-level import is caught."""
    pkg = tmp_path / "daskflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from daskflow import b\n")
    (pkg / "b.py").write_text("def f():\n    from daskflow.a import _hidden\n")
    f = structure.figures(tmp_path)
    assert f["cycles"] == [["daskflow.a", "daskflow.b"]]
    assert [(m, t) for m, _, t in f["lazy"]] == [("daskflow.b", "daskflow.a")]
    assert [(m, t) for m, _, t in f["private"]] == [("daskflow.b", "daskflow.a._hidden")]


def test_importing_daskflow_imports_no_distributed():
    code = "import sys, daskflow; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(ROOT), check=True)
    assert out.stdout.strip() == "False"


def test_the_docs_show_the_figures_of_this_code():
    """The architecture page's table is the script's output for this code
    (`python tools/structure.py --write` writes it)."""
    assert structure.shown(ROOT) == structure.table(structure.figures(ROOT))
