"""MkDocs hook (mkdocs.yml ``hooks:``): the docs pages link to files of the
repository outside ``docs/`` (the notebooks, ``clusters/README.md``, the
benchmark plots) with relative links such as ``../notebooks/quickstart.ipynb``,
which GitHub renders. MkDocs knows only the files under ``docs/``, so each
such target that exists is copied into the site under ``repo/`` and the link
points there; a target that does not exist stays unknown to MkDocs, whose
``--strict`` build then fails on the broken link.

The notebooks (``notebooks/*.ipynb``) are also pages of the site, rendered
by mkdocs-jupyter without being run (they carry no outputs), at
``notebooks/<name>/``; a page's link to one (``../notebooks/quickstart.ipynb``,
right on GitHub) is pointed at that page.

It also fills the generated reference blocks (``tools/reference.py``) at each
build: the settings table of docs/settings.md from the schema and the
defaults, and docs/reference/cli.md from the ``daskflow`` command's parser,
imported from this tree.
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))  # this tree's daskflow, whatever the venv has installed

import blocks  # noqa: E402
import reference  # noqa: E402

# a markdown link or image whose target leaves docs/: ](../path) or ](../path#anchor)
OUTSIDE = re.compile(r"\]\((\.\./[^)#\s]+)(?:#[^)\s]*)?\)")


class RepoFile(File):
    """A repository file copied as is, whatever its extension (a .md too)."""

    def is_documentation_page(self) -> bool:
        return False

    def is_static_page(self) -> bool:
        return False


# a link to a notebook of the repository: ](../notebooks/x.ipynb), ](../../notebooks/x.ipynb#a)
NOTEBOOK_LINK = re.compile(r"\]\(((?:\.\./)+notebooks/[^)#\s/]+\.ipynb)((?:#[^)\s]*)?)\)")


def notebooks(config) -> list[Path]:
    return sorted((Path(config.docs_dir).parent / "notebooks").glob("*.ipynb"))


@event_priority(50)  # before mkdocs-jupyter's on_files, which makes .ipynb files pages
def on_files(files, config):
    docs = Path(config.docs_dir)
    root = docs.parent
    for nb in notebooks(config):
        files.append(File(f"notebooks/{nb.name}", str(root), config.site_dir,
                          config.use_directory_urls))
    wanted: set[str] = set()
    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        folder = posixpath.dirname(page.src_uri)
        for link in OUTSIDE.findall(text):
            uri = posixpath.normpath(posixpath.join(folder, link))
            if uri.startswith("../") and (docs / uri).resolve().is_file():
                wanted.add(uri)
    for uri in sorted(wanted):
        inside = Path(docs / uri).resolve().relative_to(root.resolve()).as_posix()
        files.append(RepoFile(uri, str(docs), config.site_dir, config.use_directory_urls,
                              dest_uri=f"repo/{inside}", inclusion=InclusionLevel.INCLUDED))
    return files


_generated: dict[str, str] = {}


def on_pre_build(config):
    _generated.clear()
    _generated.update(reference.generated(ROOT))


def on_page_markdown(markdown, page, config, files):
    """Links to the notebooks lead to their pages; the generated blocks are
    as this code has them now."""
    folder = posixpath.dirname(page.file.src_uri)

    def to_page(match):
        uri = posixpath.normpath(posixpath.join(folder, match.group(1)))
        if not uri.startswith("../notebooks/"):
            return match.group(0)
        target = posixpath.relpath(uri[len("../"):], folder or ".")
        return f"]({target}{match.group(2)})"

    markdown = NOTEBOOK_LINK.sub(to_page, markdown)
    for name, body in _generated.items():
        begin, end = blocks.markers(name)
        if begin in markdown and end in markdown:
            markdown = blocks.replace(markdown, name, body)
    return markdown
