"""The README and the docs pages (docs/, built into a site by mkdocs.yml).

`make test` and `make docs` build the site with `mkdocs build --strict`,
which fails on a link between pages, to an anchor or to a repository file
that does not exist. These tests hold what that build does not see: the
README (not part of the site) stays short and its links lead somewhere, the
pages' links hold for pytest alone too, each generated figures block is in
exactly one page, the generated reference (settings, command line) is this
code's, and the README's quickstart runs as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import blocks  # noqa: E402
import reference  # noqa: E402

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def links(path: Path) -> list[str]:
    """The relative link targets of a markdown file, outside code blocks."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings, as MkDocs and GitHub make them (ASCII headings)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "")).strip().lower()
        out.add(re.sub(r"[\s]+", "-", slug))
    return out


def test_the_readme_is_short():
    assert README.stat().st_size <= 10 * 1024


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_its_heading(path):
    broken = []
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == [], f"{path.relative_to(ROOT)} links to what does not exist: {broken}"


def test_the_readme_links_to_every_page_of_the_site():
    """mkdocs.yml's nav lists every page (its build fails on a page left out),
    and the README's documentation list leads to each of them, except the
    pages of a section that has a page of its own: docs/clusters/*.md (one
    per provider) are linked from docs/clusters.md, which the README links
    to (the README stays short)."""
    def linked_from(page: Path) -> set[Path]:
        return {(page.parent / t.partition("#")[0]).resolve() for t in links(page)}

    readme = linked_from(README)
    missing = []
    for p in PAGES:
        section = p.parent.with_suffix(".md")
        if p.resolve() in readme:
            continue
        if section.parent != ROOT and section.exists() and p.resolve() in linked_from(section):
            continue
        missing.append(str(p.relative_to(ROOT)))
    assert missing == []


def test_each_figures_block_is_in_exactly_one_page():
    """tools/figures.py and tools/structure.py write each block in the page
    that holds its markers; the test figures stay in the README."""
    where = {name: blocks.holder(ROOT, name).relative_to(ROOT).as_posix()
             for name in ("tests", "waits", "records", "soak", "shutdown", "structure")}
    assert where == {"tests": "README.md", "waits": "docs/tour/waits.md",
                     "records": "docs/run-state.md",
                     "soak": "docs/run-state.md", "shutdown": "docs/shutdown.md",
                     "structure": "docs/architecture.md"}


def test_the_readme_quickstart_runs_as_written(tmp_path):
    """The README's flow, on the temporary LocalCluster it says (one worker
    here), then in-process; run as a script of its own."""
    code = re.search(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                     re.S | re.M).group(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "DASK_DASKFLOW__LOCAL__N_WORKERS": "1", "DASK_DASKFLOW__LOCAL__THREADS_PER_WORKER": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=100, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "285", out.stdout
    assert "Completed" in lines[1] and "square  10 Completed" in out.stdout, out.stdout


def test_the_settings_page_lists_every_key_of_the_schema():
    """Every setting the schema knows (each path through its ``properties``)
    has a row in the generated table, with the default daskflow.yaml gives it."""
    import yaml

    schema = yaml.safe_load((ROOT / reference.SCHEMA).read_text(encoding="utf-8"))
    defaults = yaml.safe_load((ROOT / reference.DEFAULTS).read_text(encoding="utf-8"))

    def leaves(node, key):
        children = node.get("properties")
        if children is None:
            return [key]
        return [k for name, child in children.items() for k in leaves(child, f"{key}.{name}")]

    keys = leaves(schema["properties"]["daskflow"], "daskflow")
    assert len(keys) > 30
    table = reference.settings_table(ROOT)
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines()[2:]}
    assert [k for k in keys if k not in rows] == []
    for key in keys:
        value = defaults
        for part in key.split("."):
            value = value[part]
        assert reference._value(value) in rows[key], key


def test_the_generated_blocks_in_the_pages_are_this_codes():
    """The site fills them at each build; the copies GitHub shows are
    rewritten by `python tools/reference.py --write`."""
    for name, body in reference.generated(ROOT).items():
        text = blocks.holder(ROOT, name).read_text(encoding="utf-8")
        assert blocks.replace(text, name, body) == text, f"run python tools/reference.py --write ({name})"
