"""A task's code shipped by value gets its file name and lines back."""

from __future__ import annotations

import linecache
import pickle

import cloudpickle

from daskflow.core.origin import DYNAMIC, origin_of, restore


def _shipped(fn):
    """``fn`` as a worker gets it by value: cloudpickle names its code <dynamic-code>."""
    copy = pickle.loads(cloudpickle.dumps(fn))
    return copy


def test_functions_and_methods_get_their_file_back(tmp_path):
    source = tmp_path / "gone.py"
    source.write_text("def first(x):\n    return x + 1\n\n\ndef second(x):\n"
                      "    return x * 2\n\n\nclass Thing:\n    def method(self):\n"
                      "        return 3\n")
    namespace: dict = {"__name__": "__gone__"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    functions = [namespace["first"], namespace["second"], namespace["Thing"]().method]
    origins = [origin_of(f) for f in functions]
    source.unlink()  # as on a worker of another machine: the file is not there
    for fn, origin in zip(functions, origins):
        shipped = _shipped(fn)
        code = getattr(shipped, "__func__", shipped).__code__
        assert code.co_filename == DYNAMIC
        restore(shipped, origin)
        assert getattr(shipped, "__func__", shipped).__code__.co_filename == str(source)
    assert linecache.getline(str(source), 2).strip() == "return x + 1"
    assert linecache.getline(str(source), 6).strip() == "return x * 2"  # the second one too
    assert linecache.getline(str(source), 11).strip() == "return 3"
