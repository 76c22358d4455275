"""Renderers of plain data: the live progress (:mod:`.progress`), the report
page and a run's notebook view (:mod:`.report`), the flow's graph
(:mod:`.visualize`).  They never import the driver: they render what it
hands them."""
