"""``daskflow run``: flows from a file or a module, parameters, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

from conftest import dask_env

FLOWS = textwrap.dedent('''
    import os
    import time

    import daskflow as df

    @df.task
    def greet(name, times):
        return [f"hello {name}"] * times

    @df.task
    def pid():
        return os.getpid()

    @df.flow
    def hello(name: str = "world", times: int = 1, tags: list = []):
        return greet(name, times), tags

    @df.flow
    def where():
        return pid()

    @df.task
    def boom():
        raise ValueError("boom")

    @df.flow
    def broken():
        return boom()

    @df.task
    def nap(seconds):
        time.sleep(seconds)

    @df.flow
    def sleepy(seconds: float = 60):
        return nap(seconds)

    not_a_flow = 3

    if __name__ == "__main__":
        raise SystemExit("the file's main block must not run")
''')


def daskflow(*args, cwd, wait=True):
    cmd = [sys.executable, "-m", "daskflow.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=dask_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=dask_env(), capture_output=True, text=True,
                          timeout=120)


def write_flows(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


def test_run_a_file_with_parameters(tmp_path):
    write_flows(tmp_path)
    done = daskflow("run", "flows.py:hello", "--param", "name=dask", "-p", "times=2",
                    "-p", 'tags=["a", "b"]', "--cluster", "sync", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["state"]["name"] == "Completed" and record["flow"] == "hello"
    assert record["parameters"] == {"name": "dask", "times": 2, "tags": ["a", "b"]}
    assert record["states"]["greet"]["type"] == "COMPLETED"
    assert record["result"] == [["hello dask", "hello dask"], ["a", "b"]]
    summary = daskflow("run", "flows.py:hello", "-c", "sync", cwd=tmp_path)
    assert summary.returncode == 0 and "Flow run 'hello'" in summary.stdout
    assert "Completed" in summary.stdout
    assert "result: (['hello world'], [])" in summary.stdout.splitlines()


def test_a_module_target_on_a_real_cluster(tmp_path, scheduler_address):
    # a module the workers can import too (tests/ is on their path), as any Dask graph needs
    done = daskflow("run", "common_tasks:long_flow", "-p", "seconds=0.1", "--json",
                    "--cluster", scheduler_address, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["states"]["linger"]["worker"].startswith("tcp://")


def test_a_file_flow_runs_on_workers_that_cannot_import_the_file(tmp_path, scheduler_address):
    write_flows(tmp_path)
    done = daskflow("run", "flows.py:where", "--cluster", scheduler_address, cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # its tasks travelled by value


def test_exit_codes(tmp_path):
    write_flows(tmp_path)
    failed = daskflow("run", "flows.py:broken", "-c", "sync", cwd=tmp_path)
    assert failed.returncode == 1 and "Failed" in failed.stdout
    for args, message in [
        (["nope.py:hello"], "no such file: 'nope.py'"),
        (["flows.py:nope"], "'nope' in 'flows.py': no such name; flows there: broken, hello, "
                            "sleepy, where"),
        (["flows.py:not_a_flow"], "it is a int, not a flow"),
        (["flows.py"], "say which flow"),
        (["flows.py:hello", "-p", "times=many"], "parameter 'times' of flow 'hello' must be int"),
        (["flows.py:hello", "-p", "oops"], "expected name=value"),
        (["flows.py:hello", "-p", "colour=red"], "unknown parameter(s) 'colour'"),
        (["no_such_module:flow"], "cannot import 'no_such_module'"),
        (["flows.py:hello", "-p", "nme=x"], "unknown parameter(s) 'nme' (did you mean 'name'?)"),
        (["flows.py:hello", "-c", "nosuchprofile"], "cluster='nosuchprofile' is neither"),
    ]:
        done = daskflow("run", *args, *([] if "-c" in args else ["-c", "sync"]), cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    assert daskflow("run", cwd=tmp_path).returncode == 2  # argparse: the target is required


VARIADIC = textwrap.dedent('''
    import daskflow as df

    @df.task
    def pack(*values, **named):
        return [list(values), named]

    @df.flow
    def extra(name: str, **options: int):
        return pack(name, **options)

    @df.flow
    def many(first, *rest: int, label="x"):
        return pack(first, *rest, label=label)
''')


def test_params_of_flows_with_args_and_kwargs(tmp_path, scheduler_address):
    """A name the flow does not have goes into its **kwargs (or the recorded
    dict form, options={...}); its *args takes a JSON list."""
    (tmp_path / "variadic.py").write_text(VARIADIC)
    for cluster in ("sync", scheduler_address):
        done = daskflow("run", "variadic.py:extra", "-p", "name=a", "-p", "retries=2",
                        "-p", "depth=3", "-c", cluster, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert record["result"] == [["a"], {"retries": 2, "depth": 3}]
        assert record["parameters"] == {"name": "a", "options": {"retries": 2, "depth": 3}}
    same = daskflow("run", "variadic.py:extra", "-p", "name=a", "-p", 'options={"depth": 3}',
                    "-c", "sync", "--json", cwd=tmp_path)
    assert json.loads(same.stdout)["result"] == [["a"], {"depth": 3}], same.stderr
    done = daskflow("run", "variadic.py:many", "-p", "first=1", "-p", "rest=[2, 3]",
                    "-p", "label=y", "-c", "sync", "--json", cwd=tmp_path)
    record = json.loads(done.stdout)
    assert record["result"] == [[1, 2, 3], {"label": "y"}], done.stderr
    assert record["parameters"] == {"first": 1, "rest": [2, 3], "label": "y"}
    for args, message in [
        (["variadic.py:extra", "-p", "name=a", "-p", "depth=deep"],
         "parameter 'depth' (in **options) of flow 'extra' must be int, got str 'deep'"),
        (["variadic.py:extra", "-p", "name=a", "-p", "fuse=1"],
         "'fuse' cannot be an extra keyword parameter (in **options)"),
        (["variadic.py:many", "-p", "first=1", "-p", "rest=5"],
         "'rest' of flow 'many' (*rest) holds its extra positional values: give a list"),
        (["variadic.py:many", "-p", "first=1", "-p", 'rest=["a"]'],
         "value 0 of *rest of flow 'many' must be int, got str 'a'"),
    ]:
        done = daskflow("run", *args, "-c", "sync", cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_a_module_of_the_current_folder_is_a_target(tmp_path):
    """As `python -m` does, the current folder's modules can be named."""
    write_flows(tmp_path)
    done = daskflow("run", "flows:hello", "-c", "sync", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_interrupted_run_exits_130(tmp_path):
    write_flows(tmp_path)
    proc = daskflow("run", "flows.py:sleepy", "-c", "sync", cwd=tmp_path, wait=False)
    try:
        before = ""
        while " started on " not in before:  # the run's first log line: it runs
            line = proc.stderr.readline()
            assert line, f"the run ended before it started: {before}"
            before += line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "daskflow.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert "run" in done.stdout and "clusters" in done.stdout
