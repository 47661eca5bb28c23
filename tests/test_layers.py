"""The one-way wall (docs/architecture.md): the model zoo and ML core import nothing of the pipeline, and
no two modules of src/pixelzoo import each other, directly or through others. Read from the source with
ast, so a lazy import inside a function counts as much as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# The lower house: layers, models, the loss, evaluation, sampling, the audit, the training loop and what it
# saves and runs on (checkpoint, device).
LOWER = ("pixelzoo.nn", "pixelzoo.models", "pixelzoo.likelihood", "pixelzoo.evaluation", "pixelzoo.sampling",
         "pixelzoo.audit", "pixelzoo.training", "pixelzoo.checkpoint", "pixelzoo.device", "pixelzoo.recipe")
# What the lower house must never reach: settings, stage set-up, tracking, lineage, profiles, the report.
PIPELINE = ("pixelzoo.pipeline", "pixelzoo.report", "pixelzoo.config", "pixelzoo.profile")
# Circles still open, each with its way out; any other circle fails. data.sources validates a source
# entry through the schema (settings.check_source, lazily) and the schema reads the kinds' params from
# data.sources.KINDS: the way out is the per-kind validation moving into data.sources.
KNOWN_CIRCLES = [["pixelzoo.data.sources", "pixelzoo.pipeline.settings"]]


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted((SRC / "pixelzoo").rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The pixelzoo modules ``path`` imports (``from pkg import mod`` names the module when it is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pixelzoo")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixelzoo"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in modules else node.module)
    return {m for m in out if m in modules and m != "pixelzoo"}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_lower_house_imports_nothing_of_the_pipeline() -> None:
    modules = _modules()
    crossings = [f"{m} imports {i}" for m, p in modules.items() if _within(m, LOWER)
                 for i in sorted(_imports(p, modules)) if _within(i, PIPELINE)]
    assert not crossings, "\n".join(crossings)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    # a package's __init__ re-exporting its own modules is not a circle of concerns
    graph = {m: {i for i in _imports(p, modules) if not m.startswith(i + ".")} for m, p in modules.items()}
    circles = [c for c in _cycles(graph) if c not in KNOWN_CIRCLES]
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checks_see_a_crossing_and_a_circle() -> None:
    """The checks themselves can fail: a made-up crossing and circle are found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _within("pixelzoo.pipeline.settings", PIPELINE) and not _within("pixelzoo.nnx", LOWER)
