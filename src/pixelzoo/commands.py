"""The command lines of the heavy entry points, in a module that imports only the standard library.

``pixelzoo check | lineage | audit`` run modules that load pydantic, MLflow or torch when imported
(seconds). Their arguments are declared here, once: each module's ``main`` adds them to its own parser,
and the ``pixelzoo`` command parses with the same functions first, so ``--help`` and a usage error answer
without importing the module (tests/test_use.py checks that no heavy package is loaded).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Callable
from pathlib import Path

Arguments = Callable[[argparse.ArgumentParser], None]


def check_arguments(p: argparse.ArgumentParser) -> None:
    """``pixelzoo check`` / ``python -m pixelzoo.config check`` (:mod:`pixelzoo.pipeline.settings`)."""
    p.add_argument("params", nargs="?", default="params.yaml", help="params file (default params.yaml)")


def lineage_arguments(p: argparse.ArgumentParser) -> None:
    """``pixelzoo lineage`` / ``pixelzoo-lineage`` (:mod:`pixelzoo.pipeline.lineage`)."""
    p.add_argument("experiment", help="key of params.yaml `experiments`")
    p.add_argument("--check", action="store_true", help="exit with status 1 if anything is STALE or TAMPERED")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--profile", help="read the copy .work/<profile>/ of `python -m pixelzoo.profile`")
    where.add_argument("--workdir", type=Path, help="read a profile copy at this path")


def audit_arguments(p: argparse.ArgumentParser) -> None:
    """``pixelzoo audit`` / ``python -m pixelzoo.audit`` (:mod:`pixelzoo.audit`)."""
    # The registered names are not listed here: the registry imports torch. An unknown one is refused
    # by the audit with the list.
    p.add_argument("--model", required=True, help="registered model name (e.g. pixelcnn, row_lstm)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--size", type=int, default=16, help="image height = width")
    p.add_argument("--batch", type=int, default=2, help="batch of the leak test (cross-image leaks)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a model arg of every analysis, e.g. --set norm=batch or --set layers=4")
    p.add_argument("--no-leak-test", action="store_true", help="structural map only (faster at large sizes)")


# command -> (module run by it, its argument spec, whether its --help shows the module's docstring)
LIGHT: dict[str, tuple[str, Arguments, bool]] = {
    "check": ("pixelzoo.pipeline.settings", check_arguments, False),
    "lineage": ("pixelzoo.pipeline.lineage", lineage_arguments, True),
    "audit": ("pixelzoo.audit", audit_arguments, False),
}


def docstring(module: str) -> str:
    """A module's docstring read from its source file, without importing the module."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""


def parser(command: str, prog: str, summary: str) -> argparse.ArgumentParser:
    """The parser of ``command`` (a key of :data:`LIGHT`) as ``pixelzoo`` shows it."""
    module, arguments, full = LIGHT[command]
    p = argparse.ArgumentParser(prog=prog, description=docstring(module) if full else summary,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(p)
    return p
