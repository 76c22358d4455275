"""Print the structure figures of the ``daskflow`` package from its own imports.

Nothing is imported: every module is parsed with ``ast``. The figures:

- import cycles between modules, counting imports inside functions too (imports
  under ``if TYPE_CHECKING:`` are left out: they never run);
- imports of the package's own modules inside function bodies (lazy imports);
- uses of another module's private names (``from x import _y`` or ``x._y``);
- modules over 700 lines and functions over 60 lines.

Run it from the repository root::

    python tools/structure.py            # the figures
    python tools/structure.py --details  # and what each figure counts
    python tools/structure.py --write    # and write them into the page that holds
                                         # the <!-- structure --> block (docs/architecture.md);
                                         # --readme, its old name, does the same
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blocks  # noqa: E402

PACKAGE = "daskflow"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 60


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name an ``ImportFrom`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class Module:
    def __init__(self, name: str, path: Path, modules: set[str]):
        self.name = name
        self.path = path
        self.is_package = path.name == "__init__.py"
        self.tree = ast.parse(path.read_text(), str(path))
        self.lines = len(path.read_text().splitlines())
        self.modules = modules
        self.imports: set[str] = set()  # run-time imports, in functions too
        self.lazy: list[tuple[int, str]] = []  # imports of our modules inside functions
        self.private: list[tuple[int, str]] = []  # another module's private names
        self.long_functions: list[tuple[str, int]] = []
        self.aliases: dict[str, str] = {}  # local name -> our module it binds
        self._walk(self.tree, in_function=False, type_only=False)
        self._attribute_uses()
        self._function_lengths(self.tree, prefix="")

    def _ours(self, name: str) -> str | None:
        """The longest module of ours that ``name`` is or is inside."""
        while name:
            if name in self.modules:
                return name
            name = name.rpartition(".")[0]
        return None

    def _record(self, target: str, lineno: int, in_function: bool, type_only: bool):
        ours = self._ours(target)
        if ours is None or ours == self.name or type_only:
            return
        self.imports.add(ours)
        if in_function and (lineno, ours) not in self.lazy:
            self.lazy.append((lineno, ours))

    def _walk(self, node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child.test):
                for sub in child.body:
                    self._walk_one(sub, in_function, True)
                for sub in child.orelse:
                    self._walk_one(sub, in_function, type_only)
                continue
            self._walk_one(child, in_function, type_only)

    def _walk_one(self, child: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                self._record(alias.name, child.lineno, in_function, type_only)
                if alias.asname and self._ours(alias.name):
                    self.aliases[alias.asname] = alias.name
        elif isinstance(child, ast.ImportFrom):
            base = resolve(self.name, self.is_package, child)
            for alias in child.names:
                full = f"{base}.{alias.name}"
                target = full if full in self.modules else base
                self._record(target, child.lineno, in_function, type_only)
                if full in self.modules:
                    self.aliases[alias.asname or alias.name] = full
                elif (
                    alias.name.startswith("_")
                    and not alias.name.startswith("__")
                    and self._ours(base)
                    and self._ours(base) != self.name
                ):
                    self.private.append((child.lineno, f"{base}.{alias.name}"))
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self._walk(child, True, type_only)
            return
        self._walk(child, in_function, type_only)

    def _attribute_uses(self) -> None:
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in self.aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                self.private.append((node.lineno, f"{self.aliases[node.value.id]}.{node.attr}"))

    def _function_lengths(self, node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    self.long_functions.append((name, length))
                self._function_lengths(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                self._function_lengths(child, f"{prefix}{child.name}.")
            else:
                self._function_lengths(child, prefix)


def load(root: Path) -> dict[str, Module]:
    paths = sorted((root / PACKAGE).rglob("*.py"))
    names = {module_name(p, root): p for p in paths}
    return {name: Module(name, path, set(names)) for name, path in names.items()}


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    def edges(v: str) -> set[str]:
        # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are
        # the package's public faces, not dependencies of design: count the module
        return {w for w in modules[v].imports if w != PACKAGE}

    sys.setrecursionlimit(10_000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return found


def figures(root: Path) -> dict:
    modules = load(root)
    return {
        "modules": len(modules),
        "cycles": cycles(modules),
        "lazy": sorted((m.name, line, t) for m in modules.values() for line, t in m.lazy),
        "private": sorted((m.name, line, t) for m in modules.values() for line, t in m.private),
        "long_modules": sorted(
            (m.name, m.lines) for m in modules.values() if m.lines > MAX_MODULE_LINES
        ),
        "long_functions": sorted(
            (m.name, f, n) for m in modules.values() for f, n in m.long_functions
        ),
        "largest_module": max((m.lines, m.name) for m in modules.values()),
    }


def table(f: dict) -> str:
    """The figures as the architecture page's markdown table."""
    lines, name = f["largest_module"]
    rows = [("modules", f["modules"]),
            ("import cycles", len(f["cycles"])),
            ("imports of the package's own modules inside functions", len(f["lazy"])),
            ("uses of another module's private names", len(f["private"])),
            (f"modules over {MAX_MODULE_LINES} lines", f"{len(f['long_modules'])} "
                                                      f"(largest: `{name}`, {lines})"),
            (f"functions over {MAX_FUNCTION_LINES} lines", len(f["long_functions"]))]
    return "\n".join(["| figure | now |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


BLOCK = "structure"
BEGIN, END = blocks.markers(BLOCK)


def shown(root: Path) -> str:
    """The table the docs show now (in the page that holds the structure block)."""
    return blocks.read(root, BLOCK)


def write_page(root: Path, f: dict) -> Path:
    """Put the table between the structure markers, in the page that holds them."""
    return blocks.write(root, BLOCK, table(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="list what each figure counts")
    parser.add_argument("--write", "--readme", dest="write", action="store_true",
                        help="write the figures into the page that holds the structure block "
                             "(docs/architecture.md); --readme is its old name")
    parser.add_argument("--root", default=".", help="the repository root")
    args = parser.parse_args(argv)
    f = figures(Path(args.root))
    print(table(f))
    if args.write:
        write_page(Path(args.root), f)
    if args.details:
        for c in f["cycles"]:
            print("cycle:", " <-> ".join(c))
        for m, line, t in f["lazy"]:
            print(f"lazy import: {m}:{line} -> {t}")
        for m, line, t in f["private"]:
            print(f"private use: {m}:{line} -> {t}")
        for m, n in f["long_modules"]:
            print(f"long module: {m} ({n} lines)")
        for m, fn, n in f["long_functions"]:
            print(f"long function: {m}.{fn} ({n} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
