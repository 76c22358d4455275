"""Live progress of a run: a widget in a notebook, a few redrawn lines on a
terminal.

One bar per task of the flow (a map is one bar, done/total), coloured by
the worst state among its runs, with the elapsed time, the retries and the
dashboard link (and the run's web page, when one is known).  It follows ``run.states`` (fed by the run's event stream)
from a small thread that ends with the run.

On by default in a Jupyter kernel and when stderr is a terminal; the
setting ``daskflow.progress`` (``auto``, ``true``, ``false``) and
``flow.run(..., progress=False)`` turn it off.  On a terminal it draws with
ANSI escapes on stderr and needs no library (neither rich nor tqdm: a
library should not pull a UI toolkit into its users' processes for a few
lines of text); anywhere else (a pipe, a log file, CI) there is no progress
display, only the log lines.
"""

from __future__ import annotations

import html
import importlib.util
import os
import sys
import threading
import time
from typing import Any

from daskflow import config
from daskflow.core.display import badge
from daskflow.core.groups import Group
from daskflow.ui import terminal
from daskflow.ui.notebook import in_notebook
from daskflow.ui.report import dashboard_html, page_html

INTERVAL = 0.25  # seconds between redraws
_COLOURS = {"COMPLETED": "#4caf50", "SKIPPED": "#90a4ae", "FAILED": "#e53935",
            "CRASHED": "#b71c1c", "CANCELLED": "#fb8c00", "RUNNING": "#1e88e5"}
_ANSI = {"COMPLETED": "32", "SKIPPED": "90", "FAILED": "31", "CRASHED": "31",
         "CANCELLED": "33", "PENDING": "0", "RUNNING": "34"}


def wanted(progress: Any) -> str | None:
    """``"widget"``, ``"terminal"`` or None for a run's ``progress=`` option."""
    if progress is None:
        progress = config.get("progress")
    if isinstance(progress, str):
        progress = {"auto": None, "true": True, "false": False}.get(progress.lower(), progress)
    if progress is False:
        return None
    if in_notebook():
        return "widget" if _has_widgets() else None
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    if progress is True or tty:
        return "terminal" if tty or progress is True else None
    return None


def _has_widgets() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


class Tracker:
    """Redraws a renderer from a run's live states until the run ends; the
    last redraw happens before the run is marked done (its done callback), so
    nothing the caller prints after ``run.wait()`` is drawn over."""

    def __init__(self, run: Any, renderer: Any) -> None:
        self.run, self.renderer = run, renderer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ended = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"daskflow-progress-{run.run_id}")

    def start(self) -> Tracker:
        self._thread.start()
        self.run.add_done_callback(lambda run: self._end())
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set() and not self.run.done():
                with self._lock:
                    if self._ended:
                        return
                    self.draw()
                self._stop.wait(INTERVAL)
        except Exception:  # pragma: no cover - a display must never break a run
            pass
        finally:
            self._end()

    def _end(self) -> None:
        """The last redraw, once: the final block stays on the screen."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            try:
                self.draw(final=True)
            except Exception:  # pragma: no cover - a display must never break a run
                pass
            finally:
                close = getattr(self.renderer, "close", None)
                if close is not None:
                    close()

    def draw(self, final: bool = False) -> None:
        run = self.run
        state = run.state
        elapsed = (state.end if final and state.end else time.time()) - (state.start or time.time())
        groups = run.groups()
        self.renderer.update(run, groups, max(elapsed, 0.0), final)

    def stop(self, timeout: float = 5) -> None:
        """End the thread (the run has ended: its last redraw is done)."""
        self._stop.set()
        self._thread.join(timeout)


# -- renderers ---------------------------------------------------------------------------------


class WidgetRenderer:
    """ipywidgets: a header and one bar per task, updated in place; a bar's
    segments are in proportion to its runs' states (as Dask's progress bars)."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.w = w
        self.header = w.HTML()
        self.rows = w.VBox()
        self.bars: dict[str, tuple[Any, Any]] = {}
        self.view = w.VBox([self.header, self.rows])

    def show(self) -> None:
        from IPython.display import display

        display(self.view)

    def update(self, run: Any, groups: list[Group], elapsed: float, final: bool) -> None:
        dash = run.dashboard_link
        self.header.value = (
            f"<b>{html.escape(run.flow_name)}</b> {badge(run.state.name, run.state.type.value)}"
            f" <span style='color:#666'>run {html.escape(run.run_id)} · {elapsed:.1f}s"
            + (f" · {dashboard_html({'dashboard': dash, 'cluster_closed': run.cluster_closed})}"
               if dash else "")
            + (f" · {page}" if (page := page_html({'page': run.page_link, 'dashboard': dash,
                                                     'cluster_closed': run.cluster_closed}))
               else "")
            + "</span>")
        added = False
        for group in groups:
            bar_label = self.bars.get(group.name)
            if bar_label is None:
                bar = self.w.HTML(layout=self.w.Layout(width="60%"))
                label = self.w.HTML()
                bar_label = self.bars[group.name] = (bar, label)
                added = True
            bar, label = bar_label
            bar.value = _bar_html(group)
            parts = [f"{group.done}/{group.total}"]
            parts += [f"{n} {k.lower()}" for k, n in sorted(group.counts.items())
                      if k not in ("COMPLETED", "PENDING", "RUNNING")]
            if group.retries:
                parts.append(f"{group.retries} retr{'y' if group.retries == 1 else 'ies'}")
            label.value = " · ".join(parts)
        if added:
            self.rows.children = tuple(self.w.HBox(list(b)) for b in self.bars.values())


def _bar_html(group: Group, cells: int = 1000) -> str:
    """A task's bar: its name, then one segment per state, widths in proportion."""
    segments = "".join(
        f"<div title='{group.counts.get(kind, 0)} {kind.lower()}' style='width:"
        f"{100 * n / cells:.1f}%;background:{_COLOURS[kind]}'></div>"
        for kind, n in group.cells(cells))
    return (f"<div style='display:flex;align-items:center;gap:6px'>"
            f"<span style='width:9em;overflow:hidden;white-space:nowrap'>"
            f"{html.escape(group.name[:20])}</span>"
            f"<div style='display:flex;flex:1;height:14px;background:#eee;border-radius:3px;"
            f"overflow:hidden'>{segments}</div></div>")


class TerminalRenderer:
    """A few lines on stderr, redrawn in place with ANSI escapes."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.color = os.environ.get("NO_COLOR") is None

    def _c(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def update(self, run: Any, groups: list[Group], elapsed: float, final: bool) -> None:
        """Redraw the block at the bottom of the terminal (log lines written
        meanwhile stay above it, see :mod:`daskflow.ui.terminal`); the final
        one stays on the screen."""
        head = f"{run.flow_name} {run.state.name} {elapsed:.1f}s"
        if run.page_link or run.dashboard_link:
            head += f"  {run.page_link or run.dashboard_link}"
        lines = [head]
        name_w = max((len(g.name) for g in groups), default=0)
        for group in groups[:20]:
            cells = group.cells(self.width)
            bar = "".join(self._c(_ANSI[kind], "█" * n) for kind, n in cells)
            bar += "·" * (self.width - sum(n for _, n in cells))
            extra = [f"{n} {k.lower()}" for k, n in sorted(group.counts.items())
                     if k not in ("COMPLETED", "PENDING", "RUNNING")]
            if group.retries:
                extra.append(f"{group.retries} retries")
            lines.append(f"  {group.name:<{name_w}} {bar} "
                         f"{group.done}/{group.total}" + (f" ({', '.join(extra)})" if extra else ""))
        if len(groups) > 20:
            lines.append(f"  ... and {len(groups) - 20} more tasks")
        terminal.show(self, lines, self.stream)
        if final:
            self.close()

    def close(self) -> None:
        """The display ends: its last block stays on the screen as text."""
        terminal.close(self)


def follow(run: Any, how: str | None) -> Tracker | None:
    """Start showing ``run``'s progress (``how`` from :func:`wanted`)."""
    if how is None:
        return None
    if how == "widget":
        renderer: Any = WidgetRenderer()
        renderer.show()
    else:
        renderer = TerminalRenderer()
    return Tracker(run, renderer).start()

