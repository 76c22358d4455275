"""The one atomic write: a reader sees the old file or the new one, never half.

Used for the result store's records, ``flow.serve``'s state file and the
records of the clusters daskflow started.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any


def write_atomic(path: str, data: bytes | Iterable[bytes], fs: Any = None) -> None:
    """Write ``data`` (bytes, or pieces of them) to ``path`` at once.

    A local file (``fs`` None or an fsspec ``LocalFileSystem``) is written
    beside it under a name unique to this process and thread, piece by
    piece, then renamed over it; an object store's put (``fs.pipe_file``)
    is atomic already.
    """
    if fs is not None:
        from fsspec.implementations.local import LocalFileSystem

        if not isinstance(fs, LocalFileSystem):
            fs.pipe_file(path, data if isinstance(data, bytes) else b"".join(data))
            return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.writelines(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
