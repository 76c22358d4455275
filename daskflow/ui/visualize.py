"""Draw a flow's build as a graphviz picture: one box per task call or map.

With the Graphviz ``dot`` program the picture is Graphviz's; without it, a
notebook still shows a picture (a simple layered drawing in SVG, made
here), ``filename="flow.svg"`` writes that drawing, and any other format
raises a ``DaskflowError`` that says what to install.
"""

from __future__ import annotations

import functools
import html
import shutil
from typing import Any

from daskflow.define.build import Node
from daskflow.exceptions import DaskflowError


def to_graphviz(name: str, nodes: list[Node], returned: list[Node], *,
                filename: str | None = None, format: str | None = None,
                stopped_at: Node | None = None) -> Any:
    """A ``graphviz.Digraph`` of the nodes; rendered to ``filename`` when given.

    ``stopped_at``: the build stopped where the body waits for that node's
    value (what follows is built at run time); a note says so.
    """
    try:
        cls = _graph_class()
    except ImportError as err:
        raise DaskflowError(
            "flow.visualize() needs the graphviz package: pip install 'daskflow[notebook]' "
            "(and the Graphviz 'dot' program to render images)") from err
    graph = cls(name=name, graph_attr={"rankdir": "LR"})
    graph.daskflow_layout = _layers(nodes)
    if stopped_at is not None:
        note = (f"waits for {stopped_at.name}: the rest of the flow is built at run time, "
                "from its value")
        graph.node("wait", note, shape="note", style="dashed")
        graph.edge(str(stopped_at.index), "wait", style="dashed")
        layer = max((entry[2] for entry in graph.daskflow_layout), default=-1) + 1
        graph.daskflow_layout.append((f"waits for {stopped_at.name}", -1, layer,
                                      [(stopped_at.index, True)], False))
    wanted = {n.index for n in returned}
    for node in nodes:
        label = node.name
        attrs = {"shape": "box", "style": "rounded"}
        if node.mapped is not None:
            size = "?" if node.length is None else str(node.length)
            label = f"{node.name}\nmap × {size}"
            attrs["peripheries"] = "2"
        if node.kind != "task":
            attrs["style"] = "rounded,dashed"
        if node.index in wanted:
            attrs["penwidth"] = "2"
        graph.node(str(node.index), label, **attrs)
        for up in node.upstream:
            graph.edge(str(up.index), str(node.index))
        for up in (*node.wait_for, *node.setups, *node.members):
            graph.edge(str(up.index), str(node.index), style="dashed")
    if filename is not None:
        base, _, ext = filename.rpartition(".")
        fmt = format or ext or "png"
        if shutil.which("dot") is None:
            if fmt != "svg":
                raise DaskflowError(
                    f"flow.visualize(filename={filename!r}) needs the Graphviz program 'dot' "
                    "to draw a " + fmt + " file, and it is not on PATH: install the graphviz "
                    "system package (apt-get install graphviz, brew install graphviz, or "
                    "conda install graphviz), or give a .svg filename for daskflow's own "
                    "drawing")
            with open(filename if ext else f"{filename}.svg", "w", encoding="utf-8") as f:
                f.write(_svg(graph.daskflow_layout))
        else:
            graph.render(base or filename, format=fmt, cleanup=True)
    return graph


def _layers(nodes: list[Node]) -> list[tuple[str, int, int, list[tuple[int, bool]], bool]]:
    """(label, node index, layer, [(upstream index, dashed)], mapped) per node, the
    layer being the longest path from a node without upstream."""
    layer: dict[int, int] = {}
    out = []
    for node in nodes:  # built in order: upstream nodes come first
        ups = [(u.index, False) for u in node.upstream] + [
            (u.index, True) for u in (*node.wait_for, *node.setups, *node.members)]
        layer[node.index] = 1 + max((layer.get(i, 0) for i, _ in ups), default=-1)
        label = node.name if node.mapped is None else (
            f"{node.name} map × {'?' if node.length is None else node.length}")
        out.append((label, node.index, layer[node.index], ups, node.mapped is not None))
    return out


def _svg(layout: list[tuple[str, int, int, list[tuple[int, bool]], bool]]) -> str:
    """A left-to-right layered drawing of the nodes, as SVG, with no program."""
    col_w, row_h, box_h = 190, 46, 30
    rows: dict[int, int] = {}
    where: dict[int, tuple[float, float]] = {}
    for _label, index, lay, _, _ in layout:
        row = rows.get(lay, 0)
        rows[lay] = row + 1
        where[index] = (10 + lay * col_w, 10 + row * row_h)
    width = 10 + (max(rows, default=0) + 1) * col_w
    height = 20 + max(rows.values(), default=1) * row_h
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             "font-family='Helvetica,Arial,sans-serif' font-size='12'>"]
    for _, index, _, ups, _ in layout:
        x, y = where[index]
        for up, dashed in ups:
            ux, uy = where[up]
            parts.append(f"<line x1='{ux + 160}' y1='{uy + box_h / 2}' x2='{x}' "
                         f"y2='{y + box_h / 2}' stroke='#666'"
                         + (" stroke-dasharray='4 3'" if dashed else "") + "/>")
    for label, index, _, _, mapped in layout:
        x, y = where[index]
        if mapped:
            parts.append(f"<rect x='{x + 3}' y='{y + 3}' width='160' height='{box_h}' rx='6' "
                         "fill='#fff' stroke='#888'/>")
        parts.append(f"<rect x='{x}' y='{y}' width='160' height='{box_h}' rx='6' "
                     f"fill='#f4f8fd' stroke='#336'/><text x='{x + 8}' y='{y + 19}'>"
                     f"{html.escape(label[:26])}</text>")
    parts.append("</svg>")
    return "".join(parts)


@functools.cache
def _graph_class() -> Any:
    import graphviz

    class FlowGraph(graphviz.Digraph):
        """A Digraph that notebooks can show even without the dot program."""

        daskflow_layout: list = []

        def _repr_mimebundle_(self, include: Any = None, exclude: Any = None,
                              **kwargs: Any) -> dict[str, Any]:
            if shutil.which("dot") is None:
                return {"image/svg+xml": _svg(self.daskflow_layout)}
            return super()._repr_mimebundle_(include, exclude, **kwargs)

    return FlowGraph
