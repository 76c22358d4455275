"""Artifacts: small results meant for people, attached to a flow run.

A markdown note, a table, a link or an image, made inside a task or in the
flow body, modelled on Prefect's ``create_markdown_artifact``,
``create_table_artifact``, ``create_link_artifact`` and
``create_image_artifact`` (same names, same main arguments)::

    @df.task
    def check(rows):
        df.create_table_artifact(rows, key="bad-rows", description="rows that failed")
        df.create_markdown_artifact(f"**{len(rows)}** rows checked")

``df.artifact.markdown``, ``.table``, ``.link`` and ``.image`` are the same
functions under short names.

Where one goes: made in a task on a worker, it travels to the run's driver
with the run's events (in order with the task's log records, before the
task's state); in a task run in process (``cluster="sync"``) or in the flow
body it is attached at once.  It is kept on :attr:`FlowRun.artifacts`, in
the run's record (the run store, ``to_json``), and shown in the run's
notebook view, its report and its web page.

An artifact is plain data (a dict: ``id``, ``type``, ``key``,
``description``, ``data``, ``task``, ``time``), at most :data:`MAX_BYTES`
as JSON: it travels through the scheduler, so anything bigger belongs in
storage of its own, with a link artifact to it.

Made outside any run (no running task, no flow body), it raises
:class:`~daskflow.exceptions.MissingContextError`: Prefect would keep it on
its server, unattached, but with no server it would only be lost.  In a
body built only to be drawn (``flow.visualize``) it is ignored.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from daskflow.compile.graph import new_token
from daskflow.define.build import current_builder
from daskflow.events import monitor, queue
from daskflow.events.codec import ARTIFACT
from daskflow.exceptions import ArtifactError, MissingContextError
from daskflow.worker.context import current_context, current_worker

MAX_BYTES = 1_000_000  # an artifact's JSON, at most
_KEY = re.compile(r"^[a-z0-9-]+$")  # as Prefect's artifact keys
_IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif",
                b"<svg": "image/svg+xml", b"<?xm": "image/svg+xml"}


def create_markdown_artifact(markdown: str, key: str | None = None,
                             description: str | None = None) -> str:
    """Attach a markdown note to the run; its id.

    >>> import daskflow as df
    >>> @df.task
    ... def summarize(n):
    ...     df.create_markdown_artifact(f"# Done\\n**{n}** rows", key="summary")
    """
    if not isinstance(markdown, str):
        raise ArtifactError(f"create_markdown_artifact: markdown must be a str, "
                            f"not {type(markdown).__name__}")
    return _attach("markdown", markdown, key, description)


def create_table_artifact(table: Any, key: str | None = None,
                          description: str | None = None) -> str:
    """Attach a table to the run: a list of dicts (one per row), a dict of
    columns (name -> list), or a list of lists (rows); its id.  A pandas
    DataFrame works too (its ``to_dict("list")``)."""
    return _attach("table", _table(table), key, description)


def create_link_artifact(link: str, link_text: str | None = None, key: str | None = None,
                         description: str | None = None) -> str:
    """Attach a link (http, https, s3, file, ... ) to the run; its id."""
    if not isinstance(link, str) or not link:
        raise ArtifactError(f"create_link_artifact: link must be a non-empty str, not {link!r}")
    return _attach("link", {"link": link, "text": link_text}, key, description)


def create_image_artifact(image: str | bytes, key: str | None = None,
                          description: str | None = None) -> str:
    """Attach an image to the run: a URL (as Prefect's ``image_url``), or the
    bytes of a PNG, JPEG, GIF or SVG image (kept in the record); its id.

    >>> import io                                        # doctest: +SKIP
    >>> buf = io.BytesIO(); fig.savefig(buf, format="png")
    >>> df.create_image_artifact(buf.getvalue(), key="loss")
    """
    if isinstance(image, str) and image:
        data = {"url": image}
    elif isinstance(image, (bytes, bytearray, memoryview)):
        raw = bytes(image)
        mime = next((m for head, m in _IMAGE_TYPES.items() if raw.startswith(head)), None)
        if mime is None:
            raise ArtifactError("create_image_artifact: the bytes are not a PNG, JPEG, GIF or "
                                "SVG image; pass one of those, or the image's URL")
        data = {"url": f"data:{mime};base64,{base64.b64encode(raw).decode()}"}
    else:
        raise ArtifactError(f"create_image_artifact: image must be a URL (str) or an image's "
                            f"bytes, not {type(image).__name__}")
    return _attach("image", data, key, description)


markdown = create_markdown_artifact
table = create_table_artifact
link = create_link_artifact
image = create_image_artifact


def _table(table: Any) -> dict[str, Any]:
    """A table as ``{"columns": [...], "rows": [[...], ...]}``."""
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # a DataFrame
        table = table.to_dict("list")
    if isinstance(table, Mapping):
        columns = [str(c) for c in table]
        cols = [list(v) for v in table.values()]
        if len({len(c) for c in cols}) > 1:
            raise ArtifactError("create_table_artifact: the columns of the dict have different "
                                f"lengths ({', '.join(str(len(c)) for c in cols)})")
        rows = [list(r) for r in zip(*cols)]
    elif isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        if all(isinstance(r, Mapping) for r in table):
            columns = list(dict.fromkeys(str(k) for r in table for k in r))
            rows = [[r.get(c, _missing(r, c)) for c in columns] for r in table]
        elif all(isinstance(r, Sequence) and not isinstance(r, (str, bytes)) for r in table):
            width = max((len(r) for r in table), default=0)
            columns = [str(i) for i in range(width)]
            rows = [list(r) + [None] * (width - len(r)) for r in table]
        else:
            raise ArtifactError("create_table_artifact: a list table holds rows, all dicts "
                                "or all lists")
    else:
        raise ArtifactError("create_table_artifact: table must be a list of dicts, a dict of "
                            f"lists or a list of lists, not {type(table).__name__}")
    return {"columns": columns, "rows": [[_cell(v) for v in r] for r in rows]}


def _missing(row: Mapping, column: str) -> Any:
    return next((v for k, v in row.items() if str(k) == column), None)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    return repr(value) if not hasattr(value, "item") else _cell(value.item())


def _attach(kind: str, data: Any, key: str | None, description: str | None) -> str:
    if key is not None and (not isinstance(key, str) or not _KEY.match(key)):
        raise ArtifactError(f"artifact key {key!r}: only lowercase letters, numbers and "
                            "dashes (as Prefect's)")
    if description is not None and not isinstance(description, str):
        raise ArtifactError(f"artifact description must be a str, not {type(description).__name__}")
    artifact = {"id": new_token(), "type": kind, "key": key, "description": description,
                "data": data, "task": None, "time": time.time()}
    size = len(json.dumps(artifact))
    if size > MAX_BYTES:
        raise ArtifactError(f"the {kind} artifact {key or ''!s} is {size} bytes as JSON, over "
                            f"{MAX_BYTES}: it travels through the scheduler; store it "
                            "elsewhere and attach a link artifact to it")
    ctx = current_context()
    if ctx is not None:
        artifact["task"] = ctx.task_run_name
        run = ctx.call.spec.run
        worker = current_worker() if run.owner is not None else None
        if worker is None:
            monitor.local_artifact(run.run_id, artifact)
        else:
            queue.emit(worker, run, log_msg={ARTIFACT: artifact})
        return str(artifact["id"])
    builder = current_builder()
    if builder is not None:
        if builder.run_id is not None:
            monitor.local_artifact(builder.run_id, artifact)
        return str(artifact["id"])
    raise MissingContextError(
        f"create_{kind}_artifact was called outside a flow run; call it inside a @df.task "
        "while its flow runs, or in a @df.flow body (an artifact belongs to a run)")
