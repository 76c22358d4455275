"""Plain data as HTML: the state badge and a state's notebook view.

Inline styles only (a notebook output on GitHub or in nbconvert keeps no
CSS).  The report page and the run's notebook view (:mod:`daskflow.ui.report`)
and the live widget (:mod:`daskflow.ui.progress`) use these too.
"""

from __future__ import annotations

import html
from typing import Any

COLOURS = {"COMPLETED": "#2e9e44", "FAILED": "#d62728", "CRASHED": "#8c1a1a",
           "SKIPPED": "#9e9e9e", "CANCELLED": "#e08a1e", "PENDING": "#c7c7c7",
           "RUNNING": "#1f77b4"}


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML (quotes too)."""
    return html.escape(str(value), quote=True)


def badge(name: str, kind: str) -> str:
    """A coloured state label, styled inline.

    >>> badge("Completed", "COMPLETED")[:5]
    '<span'
    """
    return (f'<span style="display:inline-block;padding:1px 8px;border-radius:9px;'
            f'color:#fff;font-weight:600;background:{COLOURS.get(kind, "#555")}">'
            f"{esc(name)}</span>")


def secs(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


def state_html(st: Any) -> str:
    """A State as a notebook shows it."""
    parts = [badge(st.name, st.type.value)]
    if st.task_name:
        parts.insert(0, f"<b>{esc(st.task_name)}</b>")
    if st.duration is not None:
        parts.append(f"{st.duration:.3f}s")
    if st.attempts > 1:
        parts.append(f"{st.attempts} attempts")
    if st.worker:
        parts.append(f"on {esc(st.worker)}")
    out = " ".join(parts)
    if st.message:
        out += f"<div>{esc(st.message)}</div>"
    if st.traceback:
        out += (f"<details><summary>traceback</summary><pre style='font-size:11px'>"
                f"{esc(st.traceback)}</pre></details>")
    return f"<div>{out}</div>"
