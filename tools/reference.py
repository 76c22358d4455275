"""Reference pages generated from the code: the settings table (from
``daskflow/daskflow-schema.yaml`` and the defaults in ``daskflow/daskflow.yaml``)
and the command line (from the argparse parser of ``daskflow/cli.py``).

The docs site's hook (``tools/mkdocs_hooks.py``) fills the ``<!-- settings -->``
block of docs/settings.md and the ``<!-- cli -->`` block of docs/reference/cli.md
with them each time the site is built, so the site always shows this code's
settings and options. The copies in the pages themselves (what GitHub shows)
are written by::

    python tools/reference.py --write

and tests/test_docs.py fails when they are not this code's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blocks  # noqa: E402

SCHEMA = "daskflow/daskflow-schema.yaml"
DEFAULTS = "daskflow/daskflow.yaml"


def _cell(text: str) -> str:
    """Plain text made safe for a markdown table cell."""
    return (" ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace("|", "&#124;"))


def _value(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and "|" in value:
        # a pipe splits a GitHub table cell even inside backticks: an entity in <code> does not
        return f"<code>{_cell(value)}</code>"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


def settings(root: Path) -> list[tuple[str, Any, str, bool]]:
    """Every setting of the schema, in its order: (dotted key, default,
    description, is a group of settings). A group (an object with
    ``properties``) comes first as ``key.*`` when the schema describes it,
    then its settings; an object without ``properties`` (profiles, tag
    limits, storage options) is one setting."""
    schema = yaml.safe_load((root / SCHEMA).read_text(encoding="utf-8"))
    defaults = yaml.safe_load((root / DEFAULTS).read_text(encoding="utf-8"))
    out: list[tuple[str, Any, str, bool]] = []

    def walk(node: dict, key: str, default: Any) -> None:
        children = node.get("properties")
        if children is None:
            out.append((key, default, node.get("description", ""), False))
            return
        if node.get("description") and key != "daskflow":
            out.append((key + ".*", None, node["description"], True))
        for name, child in children.items():
            sub = default.get(name) if isinstance(default, dict) else None
            walk(child, f"{key}.{name}", sub)

    walk(schema["properties"]["daskflow"], "daskflow", defaults.get("daskflow"))
    return out


def settings_table(root: Path) -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, text, group in settings(root):
        rows.append(f"| `{key}` | {'' if group else _value(default)} | {_cell(text)} |")
    return "\n".join(rows)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
        text = _cell(action.help or "")
        if action.choices:
            text += (" " if text else "") + "(one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += f" (default: `{action.default}`)"
        rows.append(f"| {name} | {text} |")
    if not rows:
        return []
    return ["| argument | meaning |", "|---|---|", *rows, ""]


def _commands(parser: argparse.ArgumentParser, prog: str, level: int) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            out += [f"{'#' * level} `{prog} {name}`", ""]
            text = sub.description or helps.get(name) or ""
            if text:
                out += [_cell(text), ""]
            usage = " ".join(sub.format_usage().split())
            out += ["```text", usage, "```", ""]
            out += _options(sub)
            out += _commands(sub, f"{prog} {name}", level + 1)
    return out


def cli_page() -> str:
    """Each command and subcommand of ``daskflow``: its help, usage and arguments."""
    from daskflow.cli import build_parser

    parser = build_parser()
    return "\n".join([_cell(parser.description or ""), "", *_commands(parser, "daskflow", 2)]).rstrip()


def generated(root: Path) -> dict[str, str]:
    """The body of each generated block, by block name."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return {"settings": settings_table(root), "cli": cli_page()}


def write(root: Path) -> list[Path]:
    changed = []
    for name, body in generated(root).items():
        page = blocks.holder(root, name)
        text = page.read_text(encoding="utf-8")
        new = blocks.replace(text, name, body)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    if "--write" in sys.argv[1:]:
        for page in write(root):
            print(f"wrote {page.relative_to(root)}")
    else:
        for name, body in generated(root).items():
            print(f"<!-- {name} -->\n{body}\n")
