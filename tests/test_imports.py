"""The shape of the code: no import cycle, and every layer imports only the layers below it.

Every `import` in every module of classifier/, bot/ and spy/ counts, including the ones inside functions and
under `if TYPE_CHECKING:` (a lazy import is still a dependency, and a cycle through one is still a cycle).
The graph is read from the source with `ast`, so this runs in milliseconds and without importing TensorFlow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("classifier", "bot", "spy")

# What each part of classifier/ may import from classifier/ (besides itself). Read top down: each layer uses
# only layers further down, so the allowed sets form a DAG.
BASE = {"classifier.errors"}
LAYERS: dict[str, set[str]] = {
    "classifier.errors": set(),
    "classifier.settings": set(),
    "classifier.logs": {"classifier.settings"},
    "classifier.audio": BASE,
    "classifier.model": BASE | {"classifier.audio"},
    "classifier.pipeline": BASE | {"classifier.audio", "classifier.model"},
    "classifier.tracklist": BASE | {"classifier.audio", "classifier.model", "classifier.pipeline"},
    "classifier.sources": BASE | {"classifier.settings"},
    "classifier.store": BASE | {"classifier.model"},
    "classifier.training": BASE | {"classifier.settings", "classifier.audio", "classifier.model",
                                   "classifier.pipeline", "classifier.tracklist", "classifier.sources",
                                   "classifier.store"},
    "classifier.serve": BASE | {"classifier.settings", "classifier.logs", "classifier.audio", "classifier.model",
                                "classifier.pipeline", "classifier.tracklist", "classifier.sources",
                                "classifier.store", "classifier.training"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module of ours, line) for every import statement in the file."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:            # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                sub = f"{module}.{alias.name}"
                yield (sub if sub in MODULES else module), node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            while target and target not in MODULES:   # `classifier.model.heads.Head` -> the module
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str) -> str | None:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def test_the_walker_sees_the_packages() -> None:
    assert {"classifier.pipeline", "classifier.serve.api", "classifier.serve.engine", "bot.telegram_app", "bot.core",
            "spy.cli"} <= set(MODULES)
    graph = _graph()
    assert "classifier.model.heads" in graph["classifier.pipeline"]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(n for n, p in MODULES.items() if n.startswith("classifier") and p.name != "__init__.py"))
def test_classifier_layers_import_only_downwards(name: str) -> None:
    layer = _layer(name)
    assert layer is not None, f"{name} belongs to no layer: add it to LAYERS"
    allowed = LAYERS[layer] | {layer}
    bad = []
    for target, line in _imports(name, MODULES[name]):
        top = target.split(".")[0]
        if top in ("bot", "spy"):
            bad.append(f"line {line}: {target} (classifier never imports a front end)")
        elif top == "classifier" and target != "classifier" and _layer(target) not in allowed:
            bad.append(f"line {line}: {target}")
    assert not bad, f"{name} ({layer}) may import only {sorted(allowed)}; it imports " + ", ".join(bad)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("bot")))
def test_bots_never_import_the_command_line(name: str) -> None:
    bad = [f"line {line}: {t}" for t, line in _imports(name, MODULES[name]) if t.split(".")[0] == "spy"]
    assert not bad, f"{name} imports the composition root: " + ", ".join(bad)


@pytest.mark.parametrize("name", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_package_inits_import_nothing(name: str) -> None:
    assert not list(_imports(name, MODULES[name])), f"{name}/__init__.py should only say what the package is for"
