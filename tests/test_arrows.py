"""The module arrows point one way: no package or top-level module of mlxspec imports,
even lazily inside a function, one that (directly or not) imports it back."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "mlxspec"


def _unit(module: str):
    """mlxspec.X for a module anywhere in package X (or the top-level module X)."""
    parts = module.split(".")
    return "mlxspec." + parts[1] if parts[0] == "mlxspec" and len(parts) > 1 else None


def import_graph(root: Path = ROOT) -> dict:
    edges: dict = {}
    for path in root.rglob("*.py"):
        me = _unit(".".join(path.relative_to(root.parent).with_suffix("").parts))
        if me is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                other = _unit(name)
                if other and other != me:
                    edges.setdefault(me, set()).add(other)
    return edges


def find_cycle(edges: dict):
    """One cycle as a list of units, or None."""
    state: dict = {}

    def visit(v, path):
        state[v] = 1
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w, path + [w])
                if found:
                    return found
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v, [v])
            if found:
                return found
    return None


def test_no_module_of_mlxspec_imports_one_that_imports_it_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    # Control: a package whose two modules import each other (one lazily) is caught.
    pkg = tmp_path / "mlxspec"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "__init__.py").write_text("from mlxspec.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from mlxspec.a import y\n")
    (pkg / "c.py").write_text("import mlxspec.b\n")
    assert find_cycle(import_graph(pkg)) == ["mlxspec.a", "mlxspec.b", "mlxspec.a"]
    (pkg / "b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(pkg)) is None
