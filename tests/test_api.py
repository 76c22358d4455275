"""The public face: __all__, settings, signals, pickling, visualize."""

from __future__ import annotations

import os
import pickle
import shutil
import sys

import dask
import pytest
import yaml
from common_tasks import inc, total

import daskflow as df
from daskflow import config


def test_all_is_sorted_and_complete():
    assert df.__all__ == sorted(df.__all__)
    for name in df.__all__:
        assert hasattr(df, name), name
    # the package's layers (subpackages and modules imported on the way) are not names
    layers = {"annotations", "cli", "compat", "compile", "config", "core", "dashboard", "define",
              "driver",
              "events",
              "exceptions", "flow", "integrations", "serve", "ui", "wire", "worker"}
    public = {n for n in dir(df) if not n.startswith("_")} - layers
    assert public <= set(df.__all__) | {"flow", "task"}


def test_errors_share_one_root():
    for name in df.__all__:
        obj = getattr(df, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj not in (df.SKIP, df.FAIL):
            assert issubclass(obj, df.DaskflowError), name


def _keys(tree, prefix=""):
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if isinstance(v, dict) and v:
            out |= _keys(v, prefix + k + ".")
    return out


def test_config_schema_is_complete():
    here = os.path.dirname(config.__file__)
    with open(os.path.join(here, "daskflow.yaml")) as f:
        defaults = yaml.safe_load(f)
    with open(os.path.join(here, "daskflow-schema.yaml")) as f:
        schema = yaml.safe_load(f)

    def schema_keys(node, prefix=""):
        out = set()
        for k, v in node.get("properties", {}).items():
            out.add(prefix + k)
            out |= schema_keys(v, prefix + k + ".")
        return out

    assert _keys(defaults) == schema_keys(schema)


def test_settings_are_read_at_call_time():
    assert config.get("logging.level") == "info"
    with dask.config.set({"daskflow.scatter.threshold": "2 MiB"}):
        assert config.bytes_setting("scatter.threshold") == 2 * 2**20


def test_environment_variables_configure(monkeypatch):
    monkeypatch.setenv("DASK_DASKFLOW__LOGGING__LEVEL", "debug")
    dask.config.refresh()
    try:
        assert config.get("logging.level") == "debug"
    finally:
        monkeypatch.delenv("DASK_DASKFLOW__LOGGING__LEVEL")
        dask.config.refresh()


@df.task(retries=1, tags=["io"])
def module_task(x):
    return x


def test_tasks_pickle_by_reference_when_importable():
    assert module_task.__reduce__() == "module_task"
    assert pickle.loads(pickle.dumps(module_task)) is module_task
    import cloudpickle

    local = df.task(lambda x: x, retries=2)  # not importable: pickled by value
    clone = pickle.loads(cloudpickle.dumps(local))
    assert clone.retries == 2 and clone.fn(3) == 3


def test_with_options():
    t = module_task.with_options(retries=3, name="renamed")
    assert (t.retries, t.name, module_task.retries) == (3, "renamed", 1)
    with pytest.raises(df.FlowDefinitionError, match="unknown task option"):
        module_task.with_options(retires=3)


def test_state_pickles_and_summarises():
    s = df.State(df.StateType.COMPLETED, result=[1, 2], attempts=2, task_name="x")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.result() == [1, 2] and clone.attempts == 2
    summary = pickle.loads(pickle.dumps(s.summary()))
    assert not summary.has_result and summary.is_completed()
    assert dask.sizeof.sizeof(df.State(df.StateType.COMPLETED, result=b"x" * 10**6)) > 10**6


@df.flow
def pictured(n: int = 3):
    with journal() as j:
        parts = inc.map(range(n))
    return total(parts, wait_for=[j])


@df.resource
def journal():
    yield "j"


def test_visualize_draws_the_flow(tmp_path):
    graph = pictured.visualize(n=4)
    source = graph.source
    assert "inc" in source and "map × 4" in source and "journal.cleanup" in source
    assert source.count("->") >= 4
    if shutil.which("dot"):
        out = tmp_path / "flow.png"
        pictured.visualize(n=2, filename=str(out))
        assert out.exists() and out.stat().st_size > 0


def test_visualize_without_the_dot_program(tmp_path, monkeypatch):
    import xml.etree.ElementTree as ET

    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    with pytest.raises(df.DaskflowError, match="apt-get install graphviz.*or give a .svg"):
        pictured.visualize(n=2, filename=str(tmp_path / "flow.png"))
    assert not (tmp_path / "flow.png").exists()
    graph = pictured.visualize(n=4, filename=str(tmp_path / "flow.svg"))
    drawing = ET.parse(tmp_path / "flow.svg").getroot()
    texts = [t.text for t in drawing.iter("{http://www.w3.org/2000/svg}text")]
    assert "inc map × 4" in texts and "total" in texts
    assert len(list(drawing.iter("{http://www.w3.org/2000/svg}line"))) >= 4
    # what a notebook shows
    assert graph._repr_mimebundle_()["image/svg+xml"].startswith("<svg")


def test_tests_never_touch_the_home_directory(monkeypatch, tmp_path):
    """The session runs with a home of its own (conftest), so even code that
    drops the test settings (dask.config.refresh) writes nowhere real."""
    import dask
    from conftest import REAL_HOME, SESSION_HOME

    from daskflow.clusters.records import records

    assert os.path.expanduser("~") == SESSION_HOME != REAL_HOME
    with dask.config.set({"daskflow.lifecycle.state-dir": "~/.local/state/daskflow/clusters"}):
        assert records.directory().startswith(SESSION_HOME)  # the default lands in the session's home
    dask.config.refresh()  # as test_config_schema does: the session's settings survive it
    assert not records.directory().startswith(SESSION_HOME)  # the session's own state dir
    assert "scratch" in dask.config.get("temporary-directory")


def test_profiles_are_found_from_any_folder(monkeypatch, tmp_path):
    from conftest import SESSION_HOME

    folder = os.path.join(SESSION_HOME, ".config", "daskflow", "clusters")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "mine.yaml"), "w") as f:
        f.write("daskflow:\n  clusters:\n    tiny-local: {kind: local, n-workers: 1}\n")
    monkeypatch.chdir(tmp_path)  # not the repository
    try:
        assert isinstance(df.clusters.from_profile("tiny-local"), df.clusters.Local)
        with pytest.raises(df.ClusterError, match=r"Did you mean 'tiny-local'\?.*looked in"):
            df.clusters.from_profile("tiny-locl")
    finally:
        os.remove(os.path.join(folder, "mine.yaml"))


def test_the_dashboard_of_a_temporary_cluster_is_the_real_one(monkeypatch):
    import urllib.request

    from daskflow.driver.backends import dashboard_hint

    with df.clusters.Local(n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        link = client.dashboard_link
        with urllib.request.urlopen(link, timeout=30) as response:
            page = response.read().decode()
        assert "needs bokeh" not in page and "Dask" in page and len(page) > 1000
        assert dashboard_hint(client.cluster) == ""
        monkeypatch.setitem(sys.modules, "bokeh", None)  # as if bokeh were not installed
        assert "pip install 'daskflow[dashboard]'" in dashboard_hint(client.cluster)


def _span_names(dask_scheduler):
    return [list(s.name) for s in dask_scheduler.extensions["spans"].spans.values()]


def test_each_run_is_a_span_on_the_scheduler(client):
    run = pictured.run(n=3, cluster=client)
    assert run.state.is_completed()
    assert [pictured.name, f"run {run.run_id}"] in client.run_on_scheduler(_span_names)


def test_a_typo_in_an_option_says_what_was_meant():
    with pytest.raises(df.FlowDefinitionError, match="'cache_expiraton' .did you mean 'cache_expiration'"):
        df.task(cache_expiraton=3)
    with pytest.raises(df.FlowDefinitionError, match="'concurency' .did you mean 'concurrency'"):
        df.flow(concurency={"db": 1})
    with pytest.raises(df.ParameterError, match="did you mean the run option concurrency="):
        pictured.run(concurency={"db": 1}, cluster="sync")


def test_a_bad_parameter_traceback_does_not_bury_the_callers_line():
    import traceback

    @df.flow
    def needs_int(day: int = 1):
        return day

    with pytest.raises(df.ParameterError) as info:
        needs_int(day="x", cluster="sync")
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "bind" not in frames and "_check_values" not in frames  # daskflow's checking
    assert len(frames) <= 4, frames
