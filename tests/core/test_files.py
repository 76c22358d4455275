"""The one atomic write."""

from __future__ import annotations

import os
import threading

import fsspec
import pytest

from daskflow.core.files import write_atomic


def test_readers_never_see_half_a_file(tmp_path):
    path = str(tmp_path / "record.json")
    write_atomic(path, b"old" * 1000)
    seen = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            with open(path, "rb") as f:
                seen.add(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            write_atomic(path, (b"new%d" % i) * 1000)
    finally:
        stop.set()
        reader.join()
    written = {b"old" * 1000, *((b"new%d" % i) * 1000 for i in range(200))}
    assert seen and seen <= written  # every read saw one whole version
    assert os.listdir(tmp_path) == ["record.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    write_atomic(path, b"before")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"after")
    monkeypatch.undo()
    with open(path, "rb") as f:
        assert f.read() == b"before"
    assert os.listdir(tmp_path) == ["state.json"]


def test_an_fsspec_filesystem_is_written_through(tmp_path):
    fs = fsspec.filesystem("memory")
    write_atomic("/daskflow-test/record.json", b"data", fs)
    try:
        assert fs.cat_file("/daskflow-test/record.json") == b"data"
    finally:
        fs.rm("/daskflow-test", recursive=True)
    local = fsspec.filesystem("file")
    write_atomic(str(tmp_path / "r.json"), b"local", local)
    assert (tmp_path / "r.json").read_bytes() == b"local"
