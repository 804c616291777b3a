"""Audit dehub's import structure: function-level imports, import cycles, module sizes.

    python scripts/import_audit.py [SRC_DIR]      # default: src

Prints (and returns as JSON with --json) the counts the architecture is held to
(docs/architecture.md): function-level imports (allowed only for the optional
third-party packages named in ``dehub._extras``), the import cycles between
modules (strongly connected components of the module import graph, every import
counted, function-level ones included), the dynamic imports (``importlib.import_module``,
``__import__``) outside ``dehub._extras`` (whose ``load_feature`` is the one lazy door, for
the modules in ``FEATURE_MODULES``), and the largest modules by lines.
Exit status 1 when a function-level import outside the allowed extras, or a dynamic
import outside ``dehub._extras``, remains.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, root: Path):
    """(target module, line, inside a function?, names) for every import of the file."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((alias.name, child.lineno, in_function, []))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                out.append((target, child.lineno, in_function, [a.name for a in child.names]))
            visit(child, inside)

    visit(tree, False)
    return module, out


def _dynamic_imports(path: Path) -> list[int]:
    """Lines of ``importlib.import_module(...)`` / ``import_module(...)`` / ``__import__(...)`` calls."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def audit(src: Path) -> dict:
    sys.path.insert(0, str(src))
    from dehub._extras import ALLOWED_FUNCTION_LEVEL  # the one list of optional extras

    files = sorted((src / "dehub").rglob("*.py"))
    modules = {}
    function_level, disallowed, internal, dynamic = [], [], [], []
    for path in files:
        if path.relative_to(src).as_posix() != "dehub/_extras.py":
            dynamic += [f"{path.relative_to(src)}:{line}" for line in _dynamic_imports(path)]
        module, imports = _imports(path, src)
        modules[module] = (path, imports)
        for target, line, in_function, _ in imports:
            if in_function:
                where = f"{path.relative_to(src)}:{line} {target}"
                function_level.append(where)
                if target.split(".")[0] not in ALLOWED_FUNCTION_LEVEL:
                    disallowed.append(where)
                if target.startswith("dehub"):
                    internal.append(where)
    # module graph (dehub modules only; "from pkg import name" may name a submodule)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (_, imports) in modules.items():
        for target, _, _, names in imports:
            if not target.startswith("dehub"):
                continue
            submodules = [n for n in names if f"{target}.{n}" in modules or _is_extension(src, target, n)]
            for name in submodules:
                if f"{target}.{name}" in modules:
                    graph[module].add(f"{target}.{name}")
            if target in modules and len(submodules) < len(names or [None]):
                graph[module].add(target)  # names defined by the package itself
        graph[module].discard(module)  # "from . import name" inside a package is no cycle
    cycles = [sorted(c) for c in _sccs(graph) if len(c) > 1]
    sizes = sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(src))) for p, _ in modules.values()),
        reverse=True,
    )
    return {
        "modules": len(modules),
        "function_level_imports": len(function_level),
        "function_level_not_extras": disallowed,
        "function_level_internal": len(internal),
        "dynamic_imports": dynamic,
        "cycles": cycles,
        "largest_modules": sizes[:5],
    }


def _is_extension(src: Path, package: str, name: str) -> bool:
    """Whether ``package.name`` is a compiled extension module (``name.*.so``), not a name in ``__init__``."""
    folder = src.joinpath(*package.split("."))
    return any(folder.glob(f"{name}.*.so")) or any(folder.glob(f"{name}.*.pyd"))


def _sccs(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.add(member)
                    if member == node:
                        break
                out.append(comp)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default="src")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = audit(Path(args.src).resolve())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"modules: {report['modules']}")
        print(
            f"function-level imports: {report['function_level_imports']} "
            f"({len(report['function_level_not_extras'])} outside the optional extras, "
            f"{report['function_level_internal']} of them of dehub itself)"
        )
        for where in report["function_level_not_extras"]:
            print(f"  {where}")
        print(f"dynamic imports outside dehub._extras: {len(report['dynamic_imports'])}")
        for where in report["dynamic_imports"]:
            print(f"  {where}")
        print(f"import cycles (strongly connected module groups): {len(report['cycles'])}")
        for cycle in report["cycles"]:
            print(f"  {len(cycle)} modules: {', '.join(cycle)}")
        print("largest modules (lines): " + ", ".join(f"{p} {n}" for n, p in report["largest_modules"]))
    return 1 if report["function_level_not_extras"] or report["dynamic_imports"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
