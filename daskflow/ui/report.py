"""A run report: one self-contained HTML file made from a run's JSON record.

``run.report("run.html")``, ``daskflow run ... --report run.html`` and
``daskflow report run.json -o run.html`` all write it from
:meth:`FlowRun.to_json`'s record, so a report can be made later, on another
machine.  The page needs no network and no JavaScript: the Gantt chart is
inline SVG (one bar per task run on its worker's row, coloured by state,
with a tooltip), followed by per-task counts and durations, the parameters,
the failures with their tracebacks, the artifacts its tasks attached
(:mod:`daskflow.ui.artifacts`), and the run's log records.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from typing import Any

from daskflow.core.display import COLOURS, badge, esc, secs
from daskflow.core.groups import by_task, worst
from daskflow.ui.artifacts import artifacts_html, safe_url

RETRIED = "#f0a030"  # an attempt that failed and was retried
_LEVEL_STYLE = {"ERROR": " style='background:#fdecea'", "CRITICAL": " style='background:#fdecea'",
                "WARNING": " style='background:#fff8e1'"}
MAX_BARS = 5000  # more would make the page slow; the table still counts them all

_CSS = """
body{font:14px/1.4 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;
vertical-align:top}th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-weight:600}
pre{background:#f8f8f8;padding:8px;overflow:auto;font-size:12px}
.legend span{margin-right:12px}.muted{color:#777}
"""



def dashboard_html(record: dict) -> str:
    """The run's dashboard link; once the temporary cluster it ran on closed
    with the run, the address as plain text that says so (it leads nowhere)."""
    dash = esc(record.get("dashboard") or "")
    if record.get("cluster_closed"):
        return f"<span style='color:#666' title='{dash}'>dashboard (closed with the run)</span>"
    return f"<a href='{dash}' target='_blank'>dashboard</a>"

def render(record: dict[str, Any], head: str = "", top: str = "") -> str:
    """The report's HTML for a run record (``json.loads(run.to_json())``);
    ``head`` goes into the page's head, ``top`` above its heading (the web
    view's refresh and links).  A record written while the run goes (its
    counts per task, no task states yet) shows those counts."""
    state = record["state"]
    states: dict[str, dict] = record.get("states", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}"
             f"<title>{esc(record['flow'])} {esc(record['run_id'])}</title>"
             f"<style>{_CSS}</style></head><body>{top}"]
    dur = (state["end"] - state["start"]) if state.get("start") and state.get("end") else None
    if dur is None and state["type"] == "RUNNING" and state.get("start"):
        dur = (record.get("heartbeat") or time.time()) - state["start"]
    dash = record.get("dashboard")
    parts.append(
        f"<h1>Flow run {esc(record['flow'])}{_named(record)} "
        f"{badge(state['name'], state['type'])}</h1>"
        f"<div class='muted'>run {esc(record['run_id'])}"
        + (f" · {secs(dur)}" if dur is not None else "")
        + (f" · started {esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['start'])))}"
           if state.get("start") else "")
        + (f" · on {esc(record.get('cluster') or '?')}")
        + (f" · {dashboard_html(record)}" if dash else "")
        + "</div>"
        + (f"<p>{esc(state['message'])}</p>" if state.get("message") else ""))
    if states or not record.get("groups"):
        parts.append(_gantt(chunk_bars(states, record.get("chunked") or {}), state))
        parts.append(_task_table(states))
    else:
        parts.append(groups_table(record["groups"]))
    parts.append(artifacts_html(record.get("artifacts") or []))
    params = record.get("parameters") or {}
    if params:
        rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>"
                       for k, v in params.items())
        parts.append(f"<h2>Parameters</h2><table>{rows}</table>")
    failures = [(n, s) for n, s in states.items() if s["type"] in ("FAILED", "CRASHED")]
    if failures:
        parts.append(f"<h2>Failures ({len(failures)})</h2>")
        for i, (name, st) in enumerate(failures[:50]):
            tb = st.get("traceback") or ""
            parts.append(
                f"<details{' open' if i == 0 else ''}><summary><b>{esc(name)}</b>{_named(st)} "
                f"{badge(st['name'], st['type'])} {esc(st.get('message') or '')}</summary>"
                + (f"<pre>{esc(tb)}</pre>" if tb else "") + "</details>")
        if len(failures) > 50:
            parts.append(f"<p class='muted'>... and {len(failures) - 50} more</p>")
    parts.append(_logs_html(record.get("logs") or [], state))
    parts.append("</body></html>")
    return "".join(parts)


def _logs_html(logs: list[dict], state: dict) -> str:
    """The report's table of the run's log records."""
    if not logs:
        return ""
    t0 = state.get("start") or logs[0]["time"]
    rows = "".join(
        f"<tr{_LEVEL_STYLE.get(lg['level'], '')}><td class='num'>{lg['time'] - t0:+.2f}s</td>"
        f"<td>{esc(lg['level'])}</td>"
        f"<td>{esc(lg.get('task') or '')}</td><td>{esc(lg['message'])}"
        + (f"<pre>{esc(lg['traceback'])}</pre>" if lg.get("traceback") else "")
        + "</td></tr>"
        for lg in logs)
    return (f"<h2>Logs ({len(logs)})</h2><table><tr><th>time</th><th>level</th>"
            f"<th>where</th><th>message</th></tr>{rows}</table>")


def _named(record: dict[str, Any]) -> str:
    """A run's name (``task_run_name``/``flow_run_name``), when it has one."""
    name = record.get("run_name")
    return f" <i>{esc(name)}</i>" if name else ""


def run_html(record: dict[str, Any], live: bool = False, max_groups: int = 100) -> str:
    """A run as a notebook shows it: the header, one row per task (a map is one
    row with its counts per state), and the first failure, collapsed."""
    state = record["state"]
    states = record.get("states", {})
    dur = (state["end"] - state["start"]) if state.get("start") and state.get("end") else None
    if live and state.get("start"):
        dur = time.time() - state["start"]
    dash = record.get("dashboard")
    facts = [f"run <code>{esc(record['run_id'])}</code>"]
    if dur is not None:
        facts.append(f"{dur:.2f}s" + (" so far" if live else ""))
    if record.get("cluster"):
        facts.append(f"on {esc(record['cluster'])}")
    if dash:
        facts.append(dashboard_html(record))
    page = page_html(record)
    if page:
        facts.append(page)
    head = (f"<div><b>Flow run {esc(record['flow'])}</b>{_named(record)} "
            f"{badge(state['name'], state['type'])}"
            f" <span style='color:#666'>{' · '.join(facts)}</span></div>")
    if state.get("message"):
        head += f"<div>{esc(state['message'])}</div>"
    table = _task_table(states, max_groups, heading=False)
    first = next(((n, s) for n, s in states.items()
                  if s["type"] in ("FAILED", "CRASHED") and s.get("traceback")), None)
    failure = ""
    if first is not None:
        failure = (f"<details><summary>first failure: <b>{esc(first[0])}</b> "
                   f"{esc(first[1].get('message') or '')}</summary>"
                   f"<pre style='font-size:11px'>{esc(first[1]['traceback'])}</pre></details>")
    arts = record.get("artifacts") or []
    shown = (f"<details open><summary>artifacts ({len(arts)})</summary>"
             f"{artifacts_html(arts, heading=False)}</details>" if arts else "")
    return f"<div>{head}{table}{failure}{shown}</div>"


def dashboard_base(link: str | None) -> str | None:
    """The root of a dashboard from its link (``http://host:8787/status``)."""
    if not link:
        return None
    return link[:-len("/status")] if link.endswith("/status") else link.rstrip("/")


def page_url(page: str | None, dashboard: str | None, closed: bool) -> str | None:
    """The run's web page, unless it was on the dashboard of a temporary
    cluster that closed with the run (it leads nowhere now)."""
    if not page or safe_url(page) is None:
        return None
    base = dashboard_base(dashboard)
    return None if closed and base and page.startswith(base) else page


def page_html(record: dict[str, Any]) -> str:
    """A link to the run's web page, when one is known and still there."""
    page = page_url(record.get("page"), record.get("dashboard"),
                    bool(record.get("cluster_closed")))
    return f"<a href='{esc(page)}' target='_blank'>run page</a>" if page else ""


def _task_table(states: dict[str, dict], max_groups: int | None = None,
                heading: bool = True) -> str:
    groups = by_task(states)
    rows = []
    shown = list(groups.items())
    if max_groups is not None and len(shown) > max_groups:
        shown = shown[:max_groups]
    for base, sts in shown:
        counts = Counter((s["name"], s["type"]) for s in sts)
        durs = [s["end"] - s["start"] for s in sts if s.get("start") and s.get("end")]
        rows.append(
            f"<tr><td>{esc(base)}</td><td class='num'>{len(sts)}</td><td>"
            + " ".join(f"{badge(f'{n} {k}' if len(sts) > 1 else k, t)}"
                       for (k, t), n in counts.items())
            + f"</td><td class='num'>{sum(s.get('attempts') or 0 for s in sts)}</td>"
            f"<td class='num'>{secs(min(durs)) if durs else ''}</td>"
            f"<td class='num'>{secs(sum(durs) / len(durs)) if durs else ''}</td>"
            f"<td class='num'>{secs(max(durs)) if durs else ''}</td></tr>")
    more = (f"<p>... and {len(groups) - len(shown)} more tasks</p>"
            if len(shown) < len(groups) else "")
    return (("<h2>Tasks</h2>" if heading else "")
            + "<table><tr><th>task</th><th>runs</th><th>states</th>"
            "<th>attempts</th><th>min</th><th>mean</th><th>max</th></tr>"
            + "".join(rows) + "</table>" + more)


def groups_table(groups: list[dict[str, Any]]) -> str:
    """The runs of each task counted by state (a record written while the run
    goes), with a bar of their states."""
    rows = []
    for g in groups:
        total = max(g.get("total") or 0, 1)
        counts = g.get("counts") or {}
        bar = "".join(f"<div style='width:{100 * n / total:.1f}%;background:"
                      f"{COLOURS.get(k, '#555')}' title='{n} {esc(k.lower())}'></div>"
                      for k, n in counts.items() if n and k != "PENDING")
        rows.append(
            f"<tr><td>{esc(g['name'])}</td><td class='num'>{g.get('total', 0)}</td>"
            f"<td style='width:300px'><div style='display:flex;height:14px;background:#eee;"
            f"border-radius:3px;overflow:hidden'>{bar}</div></td><td>"
            + " ".join(badge(f"{n} {k.lower()}", k) for k, n in counts.items() if n)
            + "</td></tr>")
    return ("<h2>Tasks</h2><table><tr><th>task</th><th>runs</th><th>progress</th>"
            "<th>states</th></tr>" + "".join(rows) + "</table>")


LANE_H, LABEL_W, WIDTH = 14, 220, 1000  # the timeline's geometry, in pixels


def chunk_bars(states: dict[str, dict], chunked: dict[str, list]) -> dict[str, dict]:
    """The states to draw: the elements of a chunked map as one bar per Dask
    task that ran them (``name[a-b]``, from the first start to the last end,
    coloured by the worst state among them)."""
    if not chunked:
        return states
    out: dict[str, dict] = {}
    members: dict[tuple[str, int], list[dict]] = {}
    bounds = {name: [stop for _, stop in spans] for name, spans in chunked.items()}
    for name, st in states.items():
        base, _, tail = name.rpartition("[")
        stops = bounds.get(base)
        if stops is None or not tail[:-1].isdigit():
            out[name] = st
            continue
        members.setdefault((base, bisect.bisect_right(stops, int(tail[:-1]))), []).append(st)
    for (base, j), group in members.items():
        start, stop = chunked[base][j] if j < len(chunked[base]) else (0, 0)
        kind = worst(Counter(s["type"] for s in group))
        worst_state = next((s for s in group if s["type"] == kind), group[0])
        timed = [s for s in group if s.get("start") and s.get("end")]
        out[f"{base}[{start}-{stop - 1}]"] = dict(
            worst_state, start=min((s["start"] for s in timed), default=None),
            end=max((s["end"] for s in timed), default=None), tries=None,
            message=f"{len(group)} elements in one Dask task")
    return out


def _gantt(states: dict[str, dict], run_state: dict) -> str:
    timed = [(n, s) for n, s in states.items() if s.get("start") and s.get("end")]
    if not timed:
        return "<h2>Timeline</h2><p class='muted'>no task has timings</p>"
    shown = timed[:MAX_BARS]
    t0 = min(s["start"] for _, s in shown)
    if run_state.get("start") and run_state["start"] <= t0:
        t0 = run_state["start"]  # zero is the run's start, as in the log table
    span = max(max(s["end"] for _, s in shown) - t0, 1e-3)
    placed, row_of, rows = _lanes(shown)
    scale = (WIDTH - LABEL_W - 10) / span
    out = [f"<h2>Timeline</h2><svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' "
           f"height='{rows * LANE_H + 30}' role='img' aria-label='task runs on workers over time'>"]
    for w, row in row_of.items():
        top = row * LANE_H
        out.append(f"<text x='4' y='{top + 11}' font-size='11'>{esc(w[-34:])}</text>"
                   f"<line x1='0' x2='{WIDTH}' y1='{top}' y2='{top}' stroke='#eee'/>")
    for name, st, w, lane in placed:
        out.extend(_bars(name, st, (row_of[w] + lane) * LANE_H + 1, t0, scale))
    axis = rows * LANE_H + 14
    for i in range(6):
        x = LABEL_W + i * (WIDTH - LABEL_W - 10) / 5
        anchor = "start" if i == 0 else ("end" if i == 5 else "middle")
        out.append(f"<text x='{x:.0f}' y='{axis}' font-size='10' fill='#777' "
                   f"text-anchor='{anchor}'>{span * i / 5:.2f}s</text>")
    out.append("</svg>")
    more = (f"<p class='muted'>the first {MAX_BARS} of {len(timed)} task runs are drawn</p>"
            if len(timed) > MAX_BARS else "")
    return "".join(out) + f"<div class='legend'>{_legend(shown)}</div>" + more


def _lanes(shown: list[tuple[str, dict]]) -> tuple[list, dict[str, int], int]:
    """Each task run on a lane of its worker's row: a worker gets as many lanes
    as it ran tasks at once.  Returns the placed runs, each worker's first
    lane, and the number of lanes."""
    workers = sorted({s.get("worker") or "in process" for _, s in shown})
    lanes: dict[str, list[float]] = {w: [] for w in workers}
    placed = []
    for name, st in sorted(shown, key=lambda x: x[1]["start"]):
        w = st.get("worker") or "in process"
        ends = lanes[w]
        lane = next((i for i, end in enumerate(ends) if end <= st["start"]), None)
        if lane is None:
            lane = len(ends)
            ends.append(0.0)
        ends[lane] = st["end"]
        placed.append((name, st, w, lane))
    row_of, y = {}, 0
    for w in workers:
        row_of[w] = y
        y += max(len(lanes[w]), 1)
    return placed, row_of, y


def _bars(name: str, st: dict, top: float, t0: float, scale: float) -> list[str]:
    """The bars of one task run: its retried attempts, then its last one."""
    out = []
    tries = st.get("tries") or [[st["start"], st["end"]]]
    for i, (begin, end) in enumerate(tries):
        last = i == len(tries) - 1
        x = LABEL_W + (begin - t0) * scale
        failed = last and st["type"] in ("FAILED", "CRASHED")
        bw = max((end - begin) * scale, 3.0 if failed else 1.0)  # a failure is never invisible
        if last:
            tip = (f"{name}{' ' + repr(st['run_name']) if st.get('run_name') else ''}: "
                   f"{st['name']} in {st['end'] - st['start']:.3f}s, "
                   f"{st.get('attempts') or 0} attempt(s)"
                   + (f" — {st['message']}" if st.get("message") else ""))
        else:
            tip = f"{name}: attempt {i + 1} failed after {end - begin:.3f}s, retried"
        fill = COLOURS.get(st["type"], "#555") if last else RETRIED
        out.append(f"<rect class='{'bar' if last else 'retry'}' x='{x:.1f}' y='{top}' "
                   f"width='{bw:.1f}' height='{LANE_H - 2}' fill='{fill}'>"
                   f"<title>{esc(tip)}</title></rect>")
        if last and bw >= 40:  # a label where it fits (about 6 px a character)
            text = name if len(name) * 6 <= bw - 4 else name[:max(int((bw - 4) // 6) - 1, 1)] + "…"
            out.append(f"<text x='{x + 2:.1f}' y='{top + LANE_H - 4}' font-size='9' "
                       f"fill='#fff' pointer-events='none'>{esc(text)}</text>")
    return out


def _legend(shown: list[tuple[str, dict]]) -> str:
    legend = " ".join(f"<span>{badge(k.title(), k)}</span>" for k in COLOURS
                      if any(s["type"] == k for _, s in shown))
    if any(s.get("tries") for _, s in shown):
        legend += (f" <span style='display:inline-block;padding:1px 8px;border-radius:9px;"
                   f"color:#fff;font-weight:600;background:{RETRIED}'>retried attempt</span>")
    return legend
