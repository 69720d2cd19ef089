"""No import cycle inside serva/: the graph of which module imports which, read from the AST of
every module (`import serva.x`, `from serva import x`, `from . import x`, `from .x import y`),
has no cycle. Imports inside functions count too: deferring an import to call time hides a
cycle from Python, not from whoever has to understand the two modules. A name imported from
a package (`from . import request_id`) is an import of the package's __init__.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "serva"


def module_names(root: Path) -> dict:
    """{dotted module name: path} of every module under root/serva."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _base(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a (relative) `from … import` names."""
    if level == 0:
        return target
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[:len(package) - (level - 1)]
    return ".".join(package + ([target] if target else []))


def _existing(name: str, modules) -> str | None:
    """`name`, or the nearest enclosing module of ours that exists."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules) -> dict:
    """{imported module of ours: first line importing it}."""
    found = {}
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            target = _existing(target, modules)
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph(root: Path = ROOT) -> dict:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict) -> list:
    """Each strongly connected group of two or more modules, as one cycle through it
    ([a, b, …, a]), found with Tarjan's algorithm (iteratively: no recursion limit)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_cycles_in(group, graph) for group in groups]


def _cycles_in(group: set, graph: dict) -> list:
    """The shortest cycle through each module of a group, each cycle once."""
    found, seen = [], set()
    for start in sorted(group):
        cycle = _cycle_through(start, group, graph)
        turned = min(tuple(cycle[i:-1] + cycle[:i]) for i in range(len(cycle) - 1))
        if turned not in seen:
            seen.add(turned)
            found.append(cycle)
    return found


def _cycle_through(start: str, group: set, graph: dict) -> list:
    """A shortest cycle from `start` back to it, inside its group."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    return paths[node] + [start]
                if child in group and child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle of {sorted(group)}")


def _describe(cycle: list, graph: dict) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps + [cycle[-1]])


def test_serva_has_no_import_cycle():
    graph = import_graph()
    groups = cycles(graph)
    text = []
    for group in groups:
        members = sorted({module for cycle in group for module in cycle})
        text.append(f"modules importing each other, round about: {', '.join(members)}")
        text += [f"  {_describe(cycle, graph)}" for cycle in group]
    assert not groups, "\n".join(text)


def test_the_graph_sees_every_form_of_import(tmp_path):
    """The check itself: each import form makes an edge, and a cycle through them is named."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "def create():\n    from . import a\n",
        "a.py": "from .b import thing\n",
        "b.py": "import serva.sub.c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import d\n",
        "d.py": "from serva import name_in_init\n",
        "alone.py": "import os\nfrom . import a\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["serva"] == {"serva.a": 2}
    assert graph["serva.a"] == {"serva.b": 1}
    assert graph["serva.b"] == {"serva.sub.c": 1}
    assert graph["serva.sub.c"] == {"serva.d": 1}
    assert graph["serva.d"] == {"serva": 1}
    assert graph["serva.alone"] == {"serva.a": 2}
    assert cycles(graph) == [[["serva", "serva.a", "serva.b", "serva.sub.c", "serva.d", "serva"]]]
    (package / "sub" / "c.py").write_text("x = 1\n")
    (package / "b.py").write_text("import serva.sub.c\nfrom . import a\n")
    assert cycles(import_graph(tmp_path)) == [[["serva.a", "serva.b", "serva.a"]]]
