"""Loading ``params.yaml`` (every knob of the pipeline lives there) with errors that say what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params file or entry is missing or invalid; the message says which and what to do."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read a params file (YAML mapping at top level) and return it as a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found; run from the project root (where dvc.yaml is)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ParamsError(f"params file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def section_entry(params: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    """``params[section][name]`` as a dict, or a ParamsError listing the names that exist."""
    entries = params.get(section)
    if not isinstance(entries, dict):
        raise ParamsError(f"params has no `{section}:` section")
    if name not in entries:
        known = ", ".join(sorted(entries)) or "(none)"
        raise ParamsError(f"unknown {section[:-1] if section.endswith('s') else section} {name!r}; "
                          f"params `{section}:` defines: {known}")
    entry = entries[name]
    if not isinstance(entry, dict):
        raise ParamsError(f"params `{section}.{name}` must be a mapping, got {type(entry).__name__}")
    return entry
