"""The pages of the web view, from run records (plain data in, HTML out).

Served by :mod:`daskflow.dashboard` (``daskflow ui``, and the scheduler's
Dask dashboard).  Server-rendered HTML that needs no JavaScript: filters are
a GET form, the sparklines and the run's timeline are inline SVG, and a page
showing a running run refreshes itself (``<meta http-equiv="refresh">``).

Paths, under the server's root: ``daskflow/runs`` (the list; ``?flow=`` and
``?state=`` filter it) and ``daskflow/runs/<run id>`` (a run's page: its
report, live while it runs).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

from daskflow.core.display import COLOURS, badge, esc
from daskflow.ui.report import render

PAGES = "daskflow/runs"  # the list's path under the server's root; a run's is PAGES/<id>
REFRESH = 2  # seconds between the reloads of a page showing a running run
SPARK = 30  # outcomes drawn per flow
MAX_ROWS = 200  # runs listed in the table (filters reach the others)
LIVE = ("RUNNING", "PENDING")

_CSS = """
body{font:14px/1.4 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;
vertical-align:middle}th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}a{color:#1f5fa8}form{margin:8px 0 12px}select,button{font:inherit}
"""


def duration(record: dict[str, Any]) -> float | None:
    """How long the run took, or has run so far (to its last heartbeat)."""
    st = record["state"]
    start = st.get("start")
    if not start:
        return None
    end = st.get("end") or (record.get("heartbeat") if st["type"] in LIVE else None)
    return max((end or time.time()) - start, 0.0)


def run_path(run_id: str) -> str:
    return f"{PAGES}/{urllib.parse.quote(run_id)}"


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f"<meta http-equiv='refresh' content='{REFRESH}'>" if refresh else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{meta}<title>{esc(title)}"
            f"</title><style>{_CSS}</style></head><body>{body}</body></html>")


def runs_page(records: Iterable[dict[str, Any]], root: str, flow: str | None = None,
              state: str | None = None, title: str = "Flow runs", note: str = "") -> str:
    """The list of runs, newest first, with filters and a sparkline per flow.

    ``root`` is the server's root URL path (``/`` or the dashboard's prefix).
    """
    every = list(records)
    flows = sorted({r["flow"] for r in every})
    states = sorted({r["state"]["type"] for r in every})
    shown = [r for r in every if (not flow or r["flow"] == flow)
             and (not state or r["state"]["type"] == state.upper())]
    running = any(r["state"]["type"] in LIVE for r in shown)
    rows = "".join(_row(r, root) for r in shown[:MAX_ROWS])
    body = (f"<h1>{esc(title)}</h1><div class='muted'>{note}"
            f"{len(shown)} of {len(every)} runs"
            + (f", the newest {MAX_ROWS} listed" if len(shown) > MAX_ROWS else "")
            + (f" · refreshes every {REFRESH}s while a run goes" if running else "") + "</div>"
            + _filters(root, flows, states, flow, state)
            + _sparklines(every, root)
            + ("<h2>Runs</h2><table><tr><th>started</th><th>flow</th><th>run</th><th>state</th>"
               "<th class='num'>duration</th><th class='num'>tasks</th><th>message</th></tr>"
               f"{rows}</table>" if shown else "<p class='muted'>no runs</p>"))
    return _page(title, body, running)


def _row(r: dict[str, Any], root: str) -> str:
    st = r["state"]
    started = st.get("start") or r.get("created")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    took = duration(r)
    tasks = r.get("tasks")
    if tasks is None:
        tasks = len(r.get("states") or {}) or sum(g.get("total", 0) for g in r.get("groups") or [])
    return (f"<tr class='run' data-state='{esc(st['type'])}'><td>{esc(when)}</td>"
            f"<td>{esc(r['flow'])}</td>"
            f"<td><a href='{esc(root + run_path(r['run_id']))}'><code>{esc(r['run_id'])}</code>"
            f"</a></td><td>{badge(st.get('name') or st['type'].title(), st['type'])}</td>"
            f"<td class='num'>{'' if took is None else f'{took:.1f}s'}</td>"
            f"<td class='num'>{tasks}</td><td>{esc((st.get('message') or '')[:160])}</td></tr>")


def _filters(root: str, flows: list[str], states: list[str], flow: str | None,
             state: str | None) -> str:
    def options(values: list[str], chosen: str | None, label: str) -> str:
        out = [f"<option value=''>{label}</option>"]
        out += [f"<option value='{esc(v)}'{' selected' if v == chosen else ''}>{esc(v)}</option>"
                for v in values]
        return "".join(out)

    return (f"<form method='get' action='{esc(root + PAGES)}'>"
            f"<select name='flow'>{options(flows, flow, 'every flow')}</select> "
            f"<select name='state'>{options(states, (state or '').upper(), 'every state')}"
            "</select> <button type='submit'>filter</button></form>")


def _sparklines(records: list[dict[str, Any]], root: str) -> str:
    """Per flow, its last outcomes, oldest first: a bar per run, its height
    the run's duration (relative to the flow's longest), its colour its state."""
    by_flow: dict[str, list[dict[str, Any]]] = {}
    for r in records:  # newest first
        runs = by_flow.setdefault(r["flow"], [])
        if len(runs) < SPARK:
            runs.append(r)
    if not by_flow:
        return ""
    rows = []
    for name, runs in sorted(by_flow.items()):
        runs = runs[::-1]
        longest = max((duration(r) or 0 for r in runs), default=0) or 1.0
        bars = []
        for i, r in enumerate(runs):
            h = 4 + 16 * (duration(r) or 0) / longest
            kind = r["state"]["type"]
            bars.append(f"<rect x='{i * 7}' y='{20 - h:.1f}' width='5' height='{h:.1f}' "
                        f"fill='{COLOURS.get(kind, '#555')}'><title>{esc(r['run_id'])} "
                        f"{esc(kind.lower())}</title></rect>")
        done = [r for r in runs if r["state"]["type"] not in LIVE]
        ok = sum(r["state"]["type"] == "COMPLETED" for r in done)
        query = urllib.parse.urlencode({"flow": name})
        rows.append(f"<tr><td><a href='{esc(root + PAGES)}?{esc(query)}'>{esc(name)}</a></td>"
                    f"<td><svg class='spark' xmlns='http://www.w3.org/2000/svg' "
                    f"width='{SPARK * 7}' height='20' role='img' aria-label='recent outcomes "
                    f"of {esc(name)}'>{''.join(bars)}</svg></td>"
                    f"<td class='num'>{ok}/{len(done)} completed</td></tr>")
    return ("<h2>Flows</h2><table><tr><th>flow</th><th>recent runs (oldest first)</th>"
            "<th class='num'>outcomes</th></tr>" + "".join(rows) + "</table>")


def run_page(record: dict[str, Any], root: str) -> str:
    """A run's page: its report, reloading itself while the run goes."""
    live = record["state"]["type"] in LIVE
    meta = f"<meta http-equiv='refresh' content='{REFRESH}'>" if live else ""
    nav = (f"<div class='muted' style='margin-bottom:8px'><a href='{esc(root + PAGES)}'>"
           f"all runs</a> · <a href='{esc(root + PAGES)}?flow="
           f"{esc(urllib.parse.quote(record['flow']))}'>runs of {esc(record['flow'])}</a>"
           + (f" · refreshes every {REFRESH}s while it runs" if live else "") + "</div>")
    return render(record, head=meta, top=nav)


def missing_page(run_id: str, root: str, where: str) -> str:
    """The page for a run id the store does not hold."""
    body = (f"<h1>No run {esc(run_id)}</h1><p>the run store {esc(where)} holds no run "
            f"whose id starts with {esc(run_id)!s}.</p><p><a href='{esc(root + PAGES)}'>"
            "all runs</a></p>")
    return _page(f"no run {run_id}", body, False)
