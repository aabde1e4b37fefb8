"""The shape of the house: no import circle among the project's modules, no benchmark or library file that
imports a test, and a README that stays a front door (size bound, every relative link resolves).

    python -m pytest -q test_imports.py

Imports are read with `ast` (nothing is executed), counting those inside functions too: a lazy import
still ties two modules together.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODULES = {p.stem: p for p in ROOT.glob("*.py")}
README_MAX_CHARS = 16_000


def imports(path):
    """The project modules that `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES) - {path.stem}


def graph():
    return {name: imports(path) for name, path in MODULES.items()}


def cycle(g):
    """One import circle of graph g as a list of names, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle():
    g = graph()
    assert {"data", "tiny", "train", "geora"} <= set(g)       # the reader sees the real modules
    assert "data" in g["tiny"] and "tiny" not in g["data"]     # the circle issue 19 removed
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_only_tests_import_tests():
    g = graph()
    bad = {n: sorted(m for m in deps if m.startswith("test_")) for n, deps in g.items() if not n.startswith("test_")}
    assert not {n: d for n, d in bad.items() if d}


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= README_MAX_CHARS, f"README.md has {len(text)} characters; move detail into docs/"
    for cmd in ("pip install torch==2.13.0", "pip install -r requirements.txt", "python train.py",
                "python -m pytest -q"):
        assert cmd in text, cmd


def test_relative_links_resolve():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(docs) > 1, "docs/ holds the detail the README links to"
    for doc in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue                                      # web links and anchors
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{doc.name} links to {target}, which does not exist"
