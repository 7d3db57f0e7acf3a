"""The floor plan: layers bottom to top, no import from a lower layer to a higher one, no import
cycles between modules, and product code never imports the test package.

    core      names, tlsa, identity, credentials, certs, userid
    dns       dns, zone, tsig
    auth      auth
    service   service (configuration, access log, metrics)
    adapters  tls and http (the proxy's HTTP mode uses http's strict HTTP/1.1 core); then smtp,
              ssh, eap, authority, message, provision, lorawan (which may use them)
    testkit   testkit (signed test zones, real servers for tests)
    top       cli, demo

Imports inside ``if TYPE_CHECKING:`` count too: a type-only dependency is still a dependency of
the design. An edge to a package's ``__init__`` is read as an edge to the package (its facade);
modules inside a package import their siblings directly, never their own package's facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dance

ROOT = Path(dance.__path__[0])

LAYERS: dict[str, int] = {
    "_warnings": 0,
    "names": 0,
    "tlsa": 0,
    "identity": 0,
    "credentials": 0,
    "certs": 0,
    "userid": 0,
    "dns": 1,
    "zone": 1,
    "tsig": 1,
    "auth": 2,
    "service": 3,
    "tls": 4,
    "http": 4,
    "smtp": 5,
    "mqtt": 5,
    "ldap": 5,
    "ssh": 5,
    "eap": 5,
    "authority": 5,
    "message": 5,
    "provision": 5,
    "lorawan": 5,
    "radius": 5,
    "webrtc": 5,
    "testkit": 6,
    "cli": 7,
    "demo": 7,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["dance", *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` is an edge to the submodule only; names that are not
            # modules come from the package (or module) itself
            subs = [f"{base}.{a.name}" for a in node.names]
            names = [n for n in subs if n in known]
            if len(names) < len(subs):
                names.append(base)
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def test_every_top_level_module_has_a_layer() -> None:
    tops = {_top(m) for m in _modules() if m != "dance"}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    bad = []
    for module, deps in _graph().items():
        if module == "dance":
            continue
        mine = LAYERS[_top(module)]
        for dep in deps:
            if dep == "dance":
                continue
            theirs = LAYERS[_top(dep)]
            if theirs > mine:
                bad.append(f"{module} -> {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_no_module_imports_its_own_package_facade() -> None:
    modules = _modules()
    bad = []
    for module, deps in _graph().items():
        if modules[module].name == "__init__.py":
            continue
        package = module.rpartition(".")[0]
        if package != "dance" and package in deps:
            bad.append(f"{module} -> {package}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    modules = _modules()
    facades = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph = {
        m: {d for d in deps if d not in facades} for m, deps in _graph().items() if m not in facades
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_product_code_never_imports_the_tests() -> None:
    bad = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                if any((n or "").split(".")[0] in {"tests", "pytest"} for n in names):
                    bad.append(module)
    assert not bad, bad
