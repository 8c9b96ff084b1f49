"""The layout holds: govedge.X.Y lives in X/Y.py, imports run one way, and no module imports itself round.

    tools -> gateway, hub -> anchor -> core

core imports no stage; anchor only core; the gateway and the hub never each other nor the tools;
no gateway stage imports the service that wires them (govedge.gateway.service).
Imports inside functions count as much as those at the top: a lazy import hides a circle, it does
not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "anchor", "gateway", "hub", "tools")
ALLOWED = {
    "core": {"core"},
    "anchor": {"core", "anchor"},
    "gateway": {"core", "anchor", "gateway"},
    "hub": {"core", "anchor", "hub"},
    "tools": set(PACKAGES),
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out["govedge." + ".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The govedge modules a module imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("govedge."):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_found_by_its_path():
    for name, path in modules().items():
        assert path.relative_to(ROOT).parts[0] == package_of(name)


def test_imports_run_one_way():
    wrong = sorted(f"{m} imports {t}" for m, targets in graph().items() for t in targets
                   if package_of(t) not in ALLOWED[package_of(m)])
    assert not wrong, "imports against the direction tools -> gateway, hub -> anchor -> core:\n" + "\n".join(wrong)


def test_no_module_imports_itself_round():
    g = graph()
    # a package's __init__ importing its own modules is how a package presents them, not a circle
    edges = {m: {t for t in ts if not (m == t.rpartition(".")[0] or t == m.rpartition(".")[0])} for m, ts in g.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_only_the_service_wires_the_gateway_stages():
    # a stage that imports the service calls back up into what wires it: data would flow both ways
    wrong = sorted(m for m, targets in graph().items()
                   if package_of(m) == "gateway" and "govedge.gateway.service" in targets)
    assert not wrong, "gateway stages importing govedge.gateway.service (only it wires them):\n" + "\n".join(wrong)
