"""The NLL gate itself: both directions fail, readable table, deliberate baseline update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pixelzoo.pipeline.profiles import regression


def _project(tmp_path: Path, baseline: dict[str, float] | None, tol: float = 0.05) -> Path:
    root = tmp_path / "root"
    (root / "ci").mkdir(parents=True)
    params = {"experiments": {"a": {}, "b": {}}, "regression": {"tolerance_bits_per_dim": tol}}
    (root / "ci" / "params.yaml").write_text(yaml.safe_dump(params))
    if baseline is not None:
        exps = {k: {"test_bits_per_dim": v, "test_nats_per_image": v, "n_images": 3}
                for k, v in baseline.items()}
        (root / "ci" / "baseline.json").write_text(json.dumps({"experiments": exps}))
    return root


def _metrics(workdir: Path, values: dict[str, float]) -> Path:
    (workdir / "metrics").mkdir(parents=True, exist_ok=True)
    for k, v in values.items():
        m = {"test_bits_per_dim": v, "test_nats_per_image": v * 10, "n_images": 3}
        (workdir / "metrics" / f"{k}.json").write_text(json.dumps(m))
    return workdir


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({"a": 1.00, "b": 2.04}, {"ok"}),
        ({"a": 1.06, "b": 2.00}, {"ok", "WORSE"}),
        ({"a": 1.00, "b": 1.90}, {"ok", "BETTER?"}),
        ({"a": 1.00}, {"ok", "MISSING"}),
    ],
)
def test_check_flags_both_directions(tmp_path: Path, current: dict, expected: set) -> None:
    root = _project(tmp_path, {"a": 1.0, "b": 2.0})
    work = _metrics(tmp_path / "work", current)
    rows = regression.compare(work, root)
    assert {r.status for r in rows} == expected
    ok, text = regression.check(work, root)
    assert ok == (expected == {"ok"})
    assert "experiment" in text and "tolerance" in text
    for status in expected - {"ok"}:
        assert status in text


def test_update_records_reason_commit_and_environment(tmp_path: Path) -> None:
    root = _project(tmp_path, None)
    work = _metrics(tmp_path / "work", {"a": 1.5, "b": 2.5})
    ok, text = regression.check(work, root)
    assert not ok and "NEW" in text
    regression.update(work, root, reason="first baseline")
    saved = json.loads((root / "ci" / "baseline.json").read_text())
    assert saved["reason"] == "first baseline"
    assert {"git_commit", "environment", "recorded_at"} <= set(saved)
    assert "torch" in saved["environment"] and "cpu" in saved["environment"]
    assert saved["experiments"]["a"]["test_bits_per_dim"] == 1.5
    assert regression.check(work, root)[0]


def test_update_refuses_without_metrics(tmp_path: Path) -> None:
    root = _project(tmp_path, None)
    with pytest.raises(FileNotFoundError, match="pixelzoo.profile"):
        regression.update(tmp_path / "empty", root, reason="x")
