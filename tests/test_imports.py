"""Import hygiene: the layers stay layers, and no two modules need each other.

The sync engine is what the CronJob image installs, so it must not reach for the operator tools, boto3,
Textual or Kubernetes; services hold no UI; the UI talks to services, never to cloud or cluster
clients; the demo sandbox is an optional extra that nothing imports behind the operator's back; and
no import cycle ties modules together. Every import statement counts, including the ones inside
functions and under `TYPE_CHECKING`: a lazy import is still a dependency.

Each rule is checked on the real tree and, so that the checker itself cannot pass vacuously, on a small
tree written to break it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sync_engine", "immich_tui")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted (for `from a import b`, `a.b` when that is a module, else `a`)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect(root: Path, packages: Iterable[str] = PACKAGES) -> tuple[set[str], list[Import]]:
    """Every module of `packages` under `root`, and every import statement in them."""
    files = {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    imports: list[Import] = []
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imports += [Import(name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    imports.append(Import(name, full if full in files else base, node.lineno))
    return set(files), imports


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# (who, what they must not import, why). `who` and `what` are dotted prefixes.
RULES: tuple[tuple[str, str, str], ...] = (
    ("sync_engine", "immich_tui", "the CronJob image holds only the engine"),
    ("sync_engine", "boto3", "the engine uses botocore alone"),
    ("sync_engine", "textual", "the CronJob image holds no UI"),
    ("sync_engine", "kubernetes", "the engine never talks to the cluster"),
    ("immich_tui.services", "textual", "services are UI-free, shared by the plugin and the TUI"),
    ("immich_tui.services", "rich", "services are UI-free, shared by the plugin and the TUI"),
    ("immich_tui.widgets", "boto3", "UI code talks to services only"),
    ("immich_tui.widgets", "botocore", "UI code talks to services only"),
    ("immich_tui.widgets", "kubernetes", "UI code talks to services only"),
    ("immich_tui.app", "boto3", "UI code talks to services only"),
    ("immich_tui.app", "botocore", "UI code talks to services only"),
    ("immich_tui.app", "kubernetes", "UI code talks to services only"),
    ("immich_tui.widgets", "immich_tui.app", "panes get Services and talk to the app through messages"),
)
# The sandbox is an optional extra: only its own modules, and the `--demo` switch, may import it.
DEMO = "immich_tui.demo"
DEMO_DOORS = frozenset({"immich_tui.cli"})


def violations(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    modules, imports = collect(root, packages)
    found = []
    for imp in imports:
        for who, what, why in RULES:
            if _under(imp.source, who) and _under(imp.target, what):
                found.append(f"{imp.source}:{imp.line} imports {imp.target} ({why})")
        if _under(imp.target, DEMO) and not _under(imp.source, DEMO) and imp.source not in DEMO_DOORS:
            found.append(f"{imp.source}:{imp.line} imports {imp.target} (the demo sandbox is an optional extra)")
    found += [f"import cycle: {' → '.join(cycle)}" for cycle in cycles(modules, imports)]
    return found


def cycles(modules: set[str], imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of the project's import graph with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = imp.target
        while target and target not in modules:  # `from pkg.mod import name` → pkg.mod
            target = target.rpartition(".")[0]
        # A package's own __init__ does not count as the module importing it (`a.b` → `a`).
        if target and target != imp.source and not _under(imp.source, target):
            graph[imp.source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_tree_keeps_its_layers_and_has_no_cycles() -> None:
    assert violations(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


BROKEN = {
    "sync_engine/__init__.py": "",
    "sync_engine/store.py": "import boto3\n",
    "sync_engine/cli.py": "def main():\n    from immich_tui.services import status\n",
    "immich_tui/__init__.py": "",
    "immich_tui/app.py": "from immich_tui.widgets import pane\n",
    "immich_tui/cli.py": "def tui():\n    from immich_tui.demo import world\n",
    "immich_tui/demo/__init__.py": "",
    "immich_tui/demo/world.py": "",
    "immich_tui/plugin/__init__.py": "",
    "immich_tui/plugin/cli.py": "from immich_tui.demo.world import Sandbox\n",
    "immich_tui/services/__init__.py": "",
    "immich_tui/services/status.py": "from textual.app import App\n",
    "immich_tui/widgets/__init__.py": "",
    "immich_tui/widgets/pane.py": (
        "from typing import TYPE_CHECKING\nfrom botocore.config import Config\n"
        "if TYPE_CHECKING:\n    from immich_tui.app import ImmichApp\n"
    ),
}


@pytest.mark.parametrize(
    "expected",
    [
        "sync_engine.store:1 imports boto3",
        "sync_engine.cli:2 imports immich_tui.services.status",
        "immich_tui.services.status:1 imports textual.app",
        "immich_tui.widgets.pane:2 imports botocore.config",
        "immich_tui.widgets.pane:4 imports immich_tui.app",
        "immich_tui.plugin.cli:1 imports immich_tui.demo.world",
        "import cycle: immich_tui.app → immich_tui.widgets.pane",
    ],
)
def test_the_checker_catches_each_kind_of_violation(tmp_path: Path, expected: str) -> None:
    _write(tmp_path, BROKEN)
    found = violations(tmp_path)
    assert any(line.startswith(expected) for line in found), found
    # The one sanctioned door to the sandbox is not reported.
    assert not any(line.startswith("immich_tui.cli:") for line in found), found
