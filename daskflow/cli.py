"""The ``daskflow`` command.

    daskflow run FILE.py:FLOW|MODULE:FLOW [--param k=v ...] [--cluster C] [--json]
    daskflow clusters list [--json]      clusters daskflow started and their state
    daskflow clusters close NAME|--all   end leftovers (shut their schedulers down)
    daskflow runs list|show|report|prune the run store
    daskflow ui [--port P] [--host H] [--store S]   the run store's pages, read-only

``daskflow run`` exits 0 when the run Completed, 1 when it did not, 2 on bad
usage (no such file or flow, a parameter the flow refuses) and 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
import time
from typing import Any

from dask.utils import format_bytes, parse_timedelta

from daskflow import dashboard
from daskflow.clusters import KINDS, ClusterSpec, from_profile
from daskflow.clusters.records import records
from daskflow.driver.connect import looks_like_address
from daskflow.driver.flowrun import FlowRun
from daskflow.driver.history import RunStore
from daskflow.exceptions import (
    ClusterError,
    DaskflowError,
    FlowDefinitionError,
    FlowRunError,
    ParameterError,
    ScheduleError,
    UIError,
)
from daskflow.flow import Flow
from daskflow.ui.report import page_url
from daskflow.wire import storage_url
from daskflow.worker import store


def spec_class(record: dict[str, Any]) -> type[ClusterSpec]:
    """The spec class that answers for a recorded cluster's kind."""
    return KINDS.get(record.get("kind") or "", ClusterSpec)


def status(record: dict[str, Any]) -> str:
    """``running``, ``orphaned`` or ``gone``, as the record's provider says."""
    return spec_class(record).record_status(record)


def _safe_status(record: dict[str, Any]) -> str:
    """The status, or why it could not be checked (one bad record never hides the others)."""
    try:
        return status(record)
    except Exception as err:
        return f"unknown ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"


def cmd_list(args: argparse.Namespace) -> int:
    rows = [{**r, "status": _safe_status(r)} for r in records.all()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no clusters started by daskflow are recorded")
        return 0
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        print(f"{r['id']:<{width}}  {r.get('kind', '?'):<10}  {r['status']:<8}  "
              f"{r.get('address')}  driver pid {r.get('driver_pid')}")
    return 0


def close_record(record: dict[str, Any]) -> str:
    """End one recorded cluster, as its provider does; say how."""
    return spec_class(record).close_record(record)


def cmd_close(args: argparse.Namespace) -> int:
    found = records.all()
    if not args.all and not args.name:
        print("say which cluster to close (a NAME from `daskflow clusters list`) or --all",
              file=sys.stderr)
        return 2
    chosen = found if args.all else [r for r in found if args.name in (r["id"], r["name"])]
    if not args.all and not chosen:
        print(f"no recorded cluster named {args.name!r}; see `daskflow clusters list`",
              file=sys.stderr)
        return 1
    for record in chosen:
        print(f"{record['id']}: {close_record(record)}")
    return 0


class UsageError(Exception):
    """Bad usage of ``daskflow run``: exit code 2, one line on stderr."""


def load_flow(target: str) -> Any:
    """The flow named by ``path/to/file.py:name`` or ``package.module:name``.

    A file is run as a script that is not ``__main__`` (so its
    ``if __name__ == "__main__":`` block does not run) and whose tasks
    travel to the workers by value, as a notebook's do.
    """
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"{target!r}: say which flow, as path/to/file.py:flow_name or "
                         "package.module:flow_name")
    if where.endswith(".py") or os.sep in where:
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {where!r}")
        sys.path.insert(0, os.path.dirname(path))  # its own imports work, as for `python file.py`
        namespace = runpy.run_path(path, run_name="__daskflow_run__")
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` does: modules of this folder
        try:
            namespace = vars(importlib.import_module(where))
        except ImportError as err:
            raise UsageError(f"cannot import {where!r}: {err}") from None
    found = namespace.get(name)
    if not isinstance(found, Flow):
        flows = sorted(k for k, v in namespace.items() if isinstance(v, Flow))
        what = "no such name" if found is None else f"it is a {type(found).__name__}, not a flow"
        raise UsageError(f"{name!r} in {where!r}: {what}; flows there: "
                         f"{', '.join(flows) or 'none'}")
    return found


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs: a value is JSON when it parses as JSON, else the string.

    They are the flow's parameters by name (see :meth:`daskflow.Flow.as_call`):
    a name the flow does not have goes into its ``**kwargs``, and its
    ``*args`` takes a JSON list (``--param args='[1, 2]'``).
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--param {pair!r}: expected name=value, e.g. --param n=3 or "
                             "--param names='[\"a\", \"b\"]'")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def cmd_run(args: argparse.Namespace) -> int:
    try:
        flow = load_flow(args.target)
        call_args, call_kwargs = flow.as_call(parse_params(args.param or []))
        flow.bind(*call_args, **call_kwargs)  # refuse bad parameters before anything starts
        check_cluster_arg(args.cluster)
    except (UsageError, ParameterError, FlowDefinitionError, ClusterError) as err:
        print(f"daskflow run: {err}", file=sys.stderr)
        return 2
    try:
        run = flow.run(*call_args, cluster=args.cluster, **call_kwargs)
    except KeyboardInterrupt:
        print("daskflow run: interrupted; the run was cancelled and its cluster ended",
              file=sys.stderr)
        return 130
    except DaskflowError as err:
        print(f"daskflow run: {err}", file=sys.stderr)
        return 1
    completed = run.state.is_completed()
    if args.json:
        record = run.record()
        if completed:
            record["result"] = run.result()
        try:
            text = json.dumps(record, indent=2, default=repr)
        except (TypeError, ValueError):  # e.g. a dict keyed by tuples: its repr
            record["result"] = repr(run.result())
            text = json.dumps(record, indent=2, default=repr)
        print(text)
    else:
        print(run.summary())
        if completed:
            print(f"result: {_shown(run.result())}")
        page = page_url(run.page_link, run.dashboard_link, run.cluster_closed)
        if page:
            print(f"page: {page}")
    if args.report:
        try:
            run.report(args.report)
        except OSError as err:
            print(f"daskflow run: could not write the report {args.report!r}: {err}",
                  file=sys.stderr)
            return 1
        print(f"report written to {args.report}", file=sys.stderr)
    return 0 if completed else 1


def _shown(value: Any, limit: int = 2000) -> str:
    """A flow's return value for the terminal: its repr, cut if very long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def check_cluster_arg(cluster: str | None) -> None:
    """A ``--cluster`` that names no profile is bad usage, found before the run."""
    if cluster is None or cluster == "sync" or looks_like_address(cluster):
        return
    from_profile(cluster)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        with open(args.record, encoding="utf-8") as f:
            run = FlowRun.from_json(f.read())
    except OSError as err:
        print(f"daskflow report: cannot read {args.record!r}: {err}", file=sys.stderr)
        return 2
    except (FlowRunError, ValueError) as err:
        print(f"daskflow report: {args.record!r} is not a run record: {err}", file=sys.stderr)
        return 2
    out = args.output or os.path.splitext(args.record)[0] + ".html"
    try:
        run.report(out)
    except OSError as err:
        print(f"daskflow report: could not write {out!r}: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(args.store)


def cmd_runs_list(args: argparse.Namespace) -> int:
    since = time.time() - parse_timedelta(args.since) if args.since else None
    rows = [r for r in _store(args).records()
            if (args.flow is None or r["flow"] == args.flow)
            and (args.state is None or r["state"]["type"] == args.state.upper()
                 or r["state"].get("name", "").lower() == args.state.lower())
            and (since is None or (r.get("created") or 0) >= since)]
    rows.sort(key=lambda r: r.get("created") or 0, reverse=True)
    rows = rows[:args.limit]
    if args.json:
        print(json.dumps([{k: r.get(k) for k in ("run_id", "flow", "state", "cluster",
                                                  "created", "heartbeat", "host", "pid")}
                          for r in rows], indent=2, default=repr))
        return 0
    if not rows:
        print(f"no runs recorded in {_store(args).url}")
        return 0
    for r in rows:
        st = r["state"]
        took = (st.get("end") or r.get("heartbeat") or 0) - (st.get("start") or 0)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("created") or 0))
        print(f"{when}  {r['run_id']}  {r['flow']:<20} {st.get('name', st['type']):<13} "
              f"{max(took, 0):8.1f}s  {(st.get('message') or '')[:80]}")
    return 0


def _recorded_run(args: argparse.Namespace) -> FlowRun | None:
    try:
        return FlowRun.from_json(json.dumps(_store(args).find(args.run), default=repr))
    except DaskflowError as err:
        print(f"daskflow runs: {err}", file=sys.stderr)
        return None


def cmd_runs_show(args: argparse.Namespace) -> int:
    run = _recorded_run(args)
    if run is None:
        return 2
    print(run.summary())
    for name, st in run.states.items():
        if st.is_failed() and st.traceback:
            print(f"\n--- {name} ({st.name}) ---\n{st.traceback.rstrip()}")
    if run.logs:
        print("\n--- logs ---")
        for line in list(run.logs)[-args.logs:]:
            print(f"{line.get('level', ''):<7} {line.get('task', '')}: {line.get('message', '')}")
    if run.artifacts:
        print("\n--- artifacts ---")
        for a in run.artifacts:
            print(f"{a.get('type', ''):<8} {a.get('key') or '-'}  ({a.get('task') or 'flow body'})"
                  f"  {_artifact_line(a)}")
    return 0


def _artifact_line(artifact: dict[str, Any]) -> str:
    """An artifact in one line of text: a link's URL, a note's first line, a table's size."""
    data = artifact.get("data") or {}
    if artifact.get("type") == "link":
        return str(data.get("link"))
    if artifact.get("type") == "table":
        return f"{len(data.get('rows', []))} rows x {len(data.get('columns', []))} columns"
    if artifact.get("type") == "image":
        url = str(data.get("url"))
        return "an image in the record" if url.startswith("data:") else url
    return next((line for line in str(data).splitlines() if line.strip()), "")[:100]


def cmd_runs_report(args: argparse.Namespace) -> int:
    run = _recorded_run(args)
    if run is None:
        return 2
    print(run.report(args.output or f"{run.flow_name}-{run.run_id}.html"))
    return 0


def cmd_runs_prune(args: argparse.Namespace) -> int:
    removed = _store(args).prune(parse_timedelta(args.older_than))
    print(f"removed {removed} run record(s) older than {args.older_than} from "
          f"{_store(args).url}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    def ready(url: str) -> None:
        print(f"daskflow ui: the runs of {RunStore(args.store).url} at {url} "
              "(read-only; Ctrl-C to stop)", flush=True)

    try:
        dashboard.serve(args.store, host=args.host, port=args.port, ready=ready)
    except UIError as err:
        print(f"daskflow ui: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if (args.cron is None) == (args.interval is None):
        print("daskflow serve: give one of --cron '0 * * * *' and --interval 10m",
              file=sys.stderr)
        return 2
    try:
        flow = load_flow(args.target)
        params = parse_params(args.param or [])
        call_args, call_kwargs = flow.as_call(params)
        flow.bind(*call_args, **call_kwargs)
        check_cluster_arg(args.cluster)
    except (UsageError, ParameterError, FlowDefinitionError, ClusterError) as err:
        print(f"daskflow serve: {err}", file=sys.stderr)
        return 2
    try:
        runs = flow.serve(cron=args.cron, interval=args.interval, parameters=params,
                          cluster=args.cluster, tz=args.tz, catchup=args.catchup,
                          overlap=args.overlap, limit=args.limit, state_dir=args.state_dir)
    except ScheduleError as err:
        print(f"daskflow serve: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("daskflow serve: interrupted; running runs were cancelled and the cluster "
              "it started was ended", file=sys.stderr)
        return 130
    except DaskflowError as err:
        print(f"daskflow serve: {err}", file=sys.stderr)
        return 1
    for run in runs:
        print(run.summary())
    return 0 if all(r.state.is_completed() for r in runs) else 1


def cmd_cache(args: argparse.Namespace) -> int:
    url = storage_url(args.storage)
    older = None
    if args.older_than:
        try:
            older = float(parse_timedelta(args.older_than, default="seconds"))
        except (ValueError, KeyError):
            print(f"daskflow cache: --older-than {args.older_than!r} is not a duration "
                  "(e.g. 7d, 12h, 3600)", file=sys.stderr)
            return 2
    now = time.time()
    chosen = [m for m in store.records(url)
              if (args.flow is None or m.get("flow") == args.flow)
              and (older is None or now - m.get("created", now) > older)]
    if args.action == "list":
        if args.json:
            print(json.dumps([{k: v for k, v in m.items() if k != "_path"} for m in chosen],
                             indent=2))
            return 0
        for m in sorted(chosen, key=lambda m: m.get("created", 0)):
            expires = m.get("expires")
            state = ("expired" if expires is not None and expires <= now else
                     f"expires in {expires - now:.0f}s" if expires is not None else "kept")
            print(f"{m['key']}  {m.get('flow')}/{m.get('task')}  "
                  f"{format_bytes(m.get('size', 0))}  "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(m.get('created', 0)))}  "
                  f"{state}")
        total = sum(m.get("size", 0) for m in chosen)
        print(f"{len(chosen)} stored result(s), {format_bytes(total)} in {url}")
        return 0
    for m in chosen:
        store.remove(url, m)
    print(f"removed {len(chosen)} stored result(s) from {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``daskflow`` command's parser (the docs site's CLI page is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="daskflow", description="daskflow: run flows, and manage the clusters it started")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_report(sub)
    _add_serve(sub)
    _add_cache(sub)
    _add_clusters(sub)
    _add_runs(sub)
    _add_ui(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def _add_run(sub: Any) -> None:
    p_run = sub.add_parser(
        "run", help="run a flow from a file or module and print its summary",
        description="Run a flow and print its summary. Exit code: 0 Completed, 1 not "
                    "completed, 2 bad usage, 130 interrupted.")
    p_run.add_argument("target", help="path/to/file.py:flow_name or package.module:flow_name")
    p_run.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                       help="a flow parameter (JSON when it parses as JSON, else a string); repeat")
    p_run.add_argument("--cluster", "-c", default=None,
                       help="sync, a scheduler address, or a profile name (default: the flow's "
                            "own, else a temporary local cluster)")
    p_run.add_argument("--json", action="store_true", help="print the run's record as JSON")
    p_run.add_argument("--report", metavar="FILE.html",
                       help="also write the run's report (one self-contained HTML file)")
    p_run.set_defaults(func=cmd_run)


def _add_report(sub: Any) -> None:
    p_report = sub.add_parser(
        "report", help="make the HTML report of a run from its JSON record",
        description="Write the report of a run recorded with `daskflow run --json` or "
                    "FlowRun.to_json(): one HTML file that opens offline.")
    p_report.add_argument("record", help="the run's JSON record")
    p_report.add_argument("--output", "-o", default=None,
                          help="where to write the report (default: the record's name, .html)")
    p_report.set_defaults(func=cmd_report)


def _add_serve(sub: Any) -> None:
    p_serve = sub.add_parser(
        "serve", help="run a flow on a schedule (cron or interval) while this process lives",
        description="Run a flow on a schedule until interrupted (or --limit runs). Runs "
                    "happen only while this process lives; for a schedule that survives "
                    "reboots, call `daskflow run` from a systemd timer or crontab. Exit "
                    "code: 0 every run Completed, 1 one did not, 2 bad usage, 130 "
                    "interrupted.")
    p_serve.add_argument("target", help="path/to/file.py:flow_name or package.module:flow_name")
    p_serve.add_argument("--cron", help="five-field cron expression, e.g. '0 * * * *'")
    p_serve.add_argument("--interval", help="seconds, or a duration such as 10m")
    p_serve.add_argument("--tz", default=None, help="time zone of --cron (default: this machine's)")
    p_serve.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                         help="a flow parameter, as for `daskflow run`; repeat")
    p_serve.add_argument("--cluster", "-c", default=None,
                         help="sync, a scheduler address, or a profile name; a cluster the "
                              "server starts is kept between runs")
    p_serve.add_argument("--catchup", choices=("none", "latest", "all"), default="none",
                         help="what to do with fires missed while the process slept")
    p_serve.add_argument("--overlap", choices=("skip", "queue", "allow"), default="skip",
                         help="what to do with a fire while a run is still going")
    p_serve.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    p_serve.add_argument("--state-dir", default=None,
                         help="where the last fire and the lock are kept (default: the "
                              "setting daskflow.serve.state-dir)")
    p_serve.set_defaults(func=cmd_serve)


def _add_cache(sub: Any) -> None:
    p_cache = sub.add_parser("cache", help="list or clear stored task results (cache=True, "
                                           "persist=True)")
    p_cache.add_argument("action", choices=("list", "clear"))
    p_cache.add_argument("--flow", default=None, help="only the results of this flow")
    p_cache.add_argument("--older-than", default=None, metavar="DURATION",
                         help="only results stored longer ago than this (e.g. 7d)")
    p_cache.add_argument("--storage", default=None,
                         help="the store (default: the setting daskflow.results.storage)")
    p_cache.add_argument("--json", action="store_true", help="list as JSON")
    p_cache.set_defaults(func=cmd_cache)


def _add_clusters(sub: Any) -> None:
    clusters = sub.add_parser("clusters", help="list or close the clusters daskflow started")
    csub = clusters.add_subparsers(dest="action", required=True)
    p_list = csub.add_parser("list", help="show recorded clusters and whether they run")
    p_list.add_argument("--json", action="store_true", help="list as JSON")
    p_list.set_defaults(func=cmd_list)
    p_close = csub.add_parser("close", help="end a recorded cluster, or all of them")
    p_close.add_argument("name", nargs="?", help="the cluster's name, as `daskflow clusters list` shows it")
    p_close.add_argument("--all", action="store_true", help="every recorded cluster")
    p_close.set_defaults(func=cmd_close)


def _add_runs(sub: Any) -> None:
    runs = sub.add_parser("runs", help="the records of past and running runs (the run store)")
    rsub = runs.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="the run store (default: the setting "
                                        "daskflow.runs.store)")
    p_list = rsub.add_parser("list", parents=[common], help="runs, newest first")
    p_list.add_argument("--flow", help="only this flow's runs")
    p_list.add_argument("--state", help="only runs in this state (completed, failed, ...)")
    p_list.add_argument("--since", help="only runs started within this long (1h, 2d)")
    p_list.add_argument("--limit", type=int, default=50)
    p_list.add_argument("--json", action="store_true")
    p_list.set_defaults(func=cmd_runs_list)
    p_show = rsub.add_parser("show", parents=[common],
                             help="a run's summary, failures and last log lines")
    p_show.add_argument("run", help="a run id, or the start of one")
    p_show.add_argument("--logs", type=int, default=50, help="how many log lines")
    p_show.set_defaults(func=cmd_runs_show)
    p_report = rsub.add_parser("report", parents=[common], help="a run's HTML report")
    p_report.add_argument("run", help="a run id, or the start of one")
    p_report.add_argument("-o", "--output", help="the HTML file to write")
    p_report.set_defaults(func=cmd_runs_report)
    p_prune = rsub.add_parser("prune", parents=[common],
                              help="remove the records of runs that ended long ago")
    p_prune.add_argument("--older-than", required=True, help="e.g. 30d, 12h")
    p_prune.set_defaults(func=cmd_runs_prune)


def _add_ui(sub: Any) -> None:
    p_ui = sub.add_parser(
        "ui", help="serve the run store's pages (runs, each run's report), read-only",
        description="Serve the run store as web pages: the list of runs (filters, "
                    "sparklines of recent outcomes) and a page per run (its report, "
                    "refreshing itself while the run goes). Server-rendered HTML, no "
                    "JavaScript. Exit code: 0 interrupted, 2 no such store or the port "
                    "cannot be used.")
    p_ui.add_argument("--port", type=int, default=8790, help="the port (0: any free one)")
    p_ui.add_argument("--host", default="127.0.0.1",
                      help="the address to listen on (default: this machine only)")
    p_ui.add_argument("--store", help="the run store (default: the setting "
                                      "daskflow.runs.store)")
    p_ui.set_defaults(func=cmd_ui)


if __name__ == "__main__":
    sys.exit(main())
