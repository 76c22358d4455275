"""A run's artifacts as HTML (plain data in, inline-styled HTML out).

Markdown is rendered by a small safe subset written here (headings, lists,
emphasis, inline code, code blocks, links, paragraphs, tables with ``|``):
every character of the text is escaped first, so an artifact can never put
a script into a report or a web page, and daskflow needs no markdown
library.  Links and images keep only ``http(s)``, ``mailto``, relative and
``data:image/`` URLs.
"""

from __future__ import annotations

import re
import time
from typing import Any

from daskflow.core.display import esc

MAX_ROWS = 500  # rows of a table artifact shown (the record keeps them all)
_SAFE_URL = re.compile(r"^(https?://|mailto:|/|\./|#|data:image/(png|jpeg|gif|svg\+xml);)", re.I)
_BOX = "border:1px solid #e3e3e3;border-radius:6px;padding:8px 12px;margin:8px 0"


def safe_url(url: str) -> str | None:
    """``url`` if a page may link to it (no ``javascript:``), else None."""
    return url if _SAFE_URL.match(url.strip()) else None


def artifacts_html(artifacts: list[dict[str, Any]], heading: bool = True) -> str:
    """Every artifact, in the order they were made."""
    if not artifacts:
        return ""
    body = "".join(artifact_html(a) for a in artifacts)
    return (f"<h2>Artifacts ({len(artifacts)})</h2>" if heading else "") + body


def artifact_html(a: dict[str, Any]) -> str:
    """One artifact in a box: its key, where it was made, its description, its content."""
    made = f"task {esc(a['task'])}" if a.get("task") else "flow body"
    when = time.strftime("%H:%M:%S", time.localtime(a["time"])) if a.get("time") else ""
    head = (f"<div style='color:#666;font-size:12px'>{esc(a.get('type', '?'))}"
            + (f" <b style='color:#222'>{esc(a['key'])}</b>" if a.get("key") else "")
            + f" · {made}" + (f" · {when}" if when else "") + "</div>")
    if a.get("description"):
        head += f"<div style='font-style:italic'>{esc(a['description'])}</div>"
    render = _RENDER.get(a.get("type", ""), _unknown)
    return (f"<div class='artifact' data-type='{esc(a.get('type', ''))}' style='{_BOX}'>"
            f"{head}{render(a.get('data'))}</div>")


def _unknown(data: Any) -> str:
    return f"<pre>{esc(data)}</pre>"


def _link(data: dict[str, Any]) -> str:
    url = str(data.get("link") or "")
    text = esc(data.get("text") or url)
    href = safe_url(url)
    return f"<a href='{esc(href)}'>{text}</a>" if href else f"<code>{esc(url)}</code>"


def _image(data: dict[str, Any]) -> str:
    url = safe_url(str(data.get("url") or ""))
    if url is None:
        return f"<code>{esc(data.get('url'))}</code>"
    return f"<img src='{esc(url)}' alt='' style='max-width:100%;max-height:480px'>"


def _table(data: dict[str, Any]) -> str:
    columns, rows = data.get("columns") or [], data.get("rows") or []
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{'' if v is None else esc(v)}</td>" for v in r)
                   + "</tr>" for r in rows[:MAX_ROWS])
    more = (f"<div style='color:#777'>the first {MAX_ROWS} of {len(rows)} rows</div>"
            if len(rows) > MAX_ROWS else "")
    return f"<table><tr>{head}</tr>{body}</table>{more}"


# -- markdown, a safe subset ---------------------------------------------------------------


def markdown_html(text: str) -> str:
    """A safe subset of markdown as HTML.

    >>> markdown_html("# Hi\\n**bold** <b>")
    '<h3>Hi</h3><p><b>bold</b> &lt;b&gt;</p>'
    """
    out: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                       len(lines))
            out.append(f"<pre>{esc(chr(10).join(lines[i + 1:end]))}</pre>")
            i = end + 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)  # under the page's own h1/h2
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        for test, block in _BLOCKS:
            if test(line):
                end = i
                while end < len(lines) and test(lines[end]):
                    end += 1
                out.append(block(lines[i:end]))
                i = end
                break
        else:
            end = i
            while end < len(lines) and lines[end].strip() and not _starts_block(lines[end]):
                end += 1
            if end > i:
                out.append(f"<p>{'<br>'.join(_inline(x) for x in lines[i:end])}</p>")
            i = max(end, i + 1)
    return "".join(out)


def _bullet(line: str) -> bool:
    return re.match(r"^\s*[-*+]\s+", line) is not None


def _numbered(line: str) -> bool:
    return re.match(r"^\s*\d+[.)]\s+", line) is not None


def _piped(line: str) -> bool:
    return line.strip().startswith("|")


def _list(tag: str, pattern: str) -> Any:
    def block(lines: list[str]) -> str:
        items = "".join(f"<li>{_inline(re.sub(pattern, '', x, count=1))}</li>" for x in lines)
        return f"<{tag}>{items}</{tag}>"
    return block


def _pipe_table(lines: list[str]) -> str:
    rows = [[c.strip() for c in x.strip().strip("|").split("|")] for x in lines]
    rows = [r for r in rows if not all(re.match(r"^:?-{2,}:?$", c) for c in r)]
    if not rows:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


_BLOCKS = [(_bullet, _list("ul", r"^\s*[-*+]\s+")), (_numbered, _list("ol", r"^\s*\d+[.)]\s+")),
           (_piped, _pipe_table)]


def _starts_block(line: str) -> bool:
    return (line.startswith("```") or re.match(r"^#{1,6}\s", line) is not None
            or any(test(line) for test, _ in _BLOCKS))


def _inline(text: str) -> str:
    """Escape, then inline code, links, bold and italics."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{esc(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = re.sub(r"`([^`]+)`", keep_code, text)
    text = esc(text)

    def link(m: re.Match) -> str:
        url = safe_url(m.group(2).replace("&amp;", "&"))
        return f"<a href='{esc(url)}'>{m.group(1)}</a>" if url else m.group(1)

    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", text)
    text = re.sub(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)", r"<i>\1</i>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _markdown(data: Any) -> str:
    return f"<div class='markdown'>{markdown_html(str(data or ''))}</div>"


_RENDER = {"markdown": _markdown, "table": _table, "link": _link, "image": _image}
