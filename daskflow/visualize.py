"""Draw a flow's build as a graphviz picture: one box per task call or map."""

from __future__ import annotations

from typing import Any

from daskflow.build import Node
from daskflow.exceptions import DaskflowError


def to_graphviz(name: str, nodes: list[Node], returned: list[Node], *,
                filename: str | None = None, format: str | None = None) -> Any:
    """A ``graphviz.Digraph`` of the nodes; rendered to ``filename`` when given."""
    try:
        import graphviz
    except ImportError as err:
        raise DaskflowError(
            "flow.visualize() needs the graphviz package: pip install 'daskflow[notebook]' "
            "(and the Graphviz 'dot' program to render images)") from err
    graph = graphviz.Digraph(name=name, graph_attr={"rankdir": "LR"})
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
        graph.render(base or filename, format=format or ext or "png", cleanup=True)
    return graph
