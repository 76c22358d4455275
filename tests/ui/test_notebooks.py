"""The notebooks in notebooks/, executed headlessly in a real kernel (nbclient,
the kernel of this venv), as a user runs them; none may raise."""

from __future__ import annotations

import glob
import os

import nbformat
import pytest
from conftest import NOTEBOOKS_RUN, ROOT, dask_env

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks_and_they_carry_no_outputs():
    assert len(NOTEBOOKS) >= 4
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{os.path.basename(path)} was committed with outputs: strip them")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    for key, value in dask_env().items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    # The kernel is killed at the end ("immediate"): after a LocalCluster with
    # worker processes it has multiprocessing's resource tracker as a child,
    # which ignores SIGTERM, and ipykernel's graceful shutdown waits on it
    # until the client gives up (2.5 s) and terminates the kernel anyway.
    client = NotebookClient(nb, timeout=240, kernel_name="python3", shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any cell error
    NOTEBOOKS_RUN.append(os.path.basename(path))
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "stream"]
    info = [o for o in streams if " | INFO    | " in o.text]
    assert info and all(o.name == "stdout" for o in info), "INFO lines must not go to stderr"
