"""Seed replicates (profile.seeds): the expansion, its params check, and the report's mean ± s.d. table."""

from __future__ import annotations

import copy
import statistics
from pathlib import Path

from test_report import BMNIST_DIMS, LN2, _params, _run, write_fixture_outputs

from pixelzoo.pipeline.profiles import replicates
from pixelzoo.pipeline.settings import load_params, validate
from pixelzoo.report.build import build_report

CPU = Path(__file__).resolve().parents[1] / "ci" / "cpu.yaml"


def test_cpu_profile_expands_to_three_seeds_per_row_in_seed_order() -> None:
    params = load_params(CPU)
    expanded = replicates.expand(params)
    rows = list(params["experiments"])
    assert params["profile"]["seeds"] == [0, 1, 2]
    assert list(expanded["experiments"]) == rows + [f"{k}-seed{s}" for s in (1, 2) for k in rows]
    for key in rows:  # the first seed keeps the name and the entry (its DVC params are unchanged)
        assert expanded["experiments"][key] == params["experiments"][key]
        rep = expanded["experiments"][f"{key}-seed2"]
        assert rep == {**params["experiments"][key], "seed": 2, "replicate_of": key}
    assert validate(expanded) == []
    assert replicates.expand(expanded) == expanded  # idempotent: a copy's params are not expanded twice
    assert replicates.groups(expanded["experiments"])[rows[0]] == [rows[0], f"{rows[0]}-seed1",
                                                                  f"{rows[0]}-seed2"]


def test_without_seeds_nothing_changes() -> None:
    params = _params()
    assert replicates.expand(params) == params
    assert replicates.groups(params["experiments"]) == {}


def test_replicate_of_must_name_another_experiment() -> None:
    params = replicates.expand({**load_params(CPU)})
    entry = params["experiments"]["pixelcnn-fashion2-seed1"]
    params["experiments"]["pixelcnn-fashion2-seed1"] = {**entry, "replicate_of": "pixelcnn-fashon2"}
    params["experiments"]["row_lstm-fashion2-seed1"]["replicate_of"] = "row_lstm-fashion2-seed1"
    found = {p.path: p for p in validate(params)}
    assert "did you mean pixelcnn-fashion2?" in found["experiments.pixelcnn-fashion2-seed1.replicate_of"].hint
    assert "experiments.row_lstm-fashion2-seed1.replicate_of" in found


def test_report_gives_mean_and_spread_per_row(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    params = copy.deepcopy(params)
    params["profile"] = {"name": "t", "description": "d", "paper_numbers": False, "seeds": [0, 1, 2]}
    params["experiments"] = {"seed004": params["experiments"]["seed004"]}
    params = replicates.expand(params)
    nats = {"seed004": 90.0, "seed004-seed1": 93.0}  # seed 2 not run yet
    for key, value in nats.items():
        _run(tmp_path, params, key, value, None)
    written = build_report(tmp_path, params, tmp_path / "reports")
    table = (tmp_path / "reports" / "table.md").read_text()
    bpd = [v / (BMNIST_DIMS * LN2) for v in nats.values()]
    row = next(ln for ln in table.splitlines() if ln.startswith("| seed004 |"))
    assert f"| {statistics.fmean(bpd):.4f} ± {statistics.stdev(bpd):.4f} |" in row
    assert f"| {min(bpd):.4f} – {max(bpd):.4f} |" in row and "| 91.50 ± 2.12 |" in row
    assert "| 2 of 3 (0, 1) |" in row  # the missing seed is counted, not hidden
    md = written.markdown.read_text()
    assert "## Mean and spread over seeds" in md and row in md
    assert md.count("seed004-seed1") >= 1 and "curves_" in md  # listed; figures show the first seed only
    assert written.figures and not any("seed004-seed1" in str(p) for p in written.figures)


def test_table_file_says_when_there_are_no_seeds(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    build_report(tmp_path, params, tmp_path / "reports")
    assert "No experiment" in (tmp_path / "reports" / "table.md").read_text()


def test_a_seed_twice_or_a_name_a_replica_would_take_is_refused() -> None:
    params = load_params(CPU)
    params["profile"]["seeds"] = [0, 1, 1]
    params["experiments"]["pixelcnn-fashion2-seed1"] = params["experiments"]["pixelcnn-fashion2"]
    found = {p.path: p.message for p in replicates.problems(params)}
    assert found["profile.seeds"] == "seed 1 is listed more than once"
    assert "pixelcnn-fashion2's run at seed 1" in found["experiments.pixelcnn-fashion2-seed1"]
    assert replicates.problems(load_params(CPU)) == []


def test_a_runs_code_is_what_dvc_yaml_names_for_its_stage() -> None:
    """Lineage calls a run stale for a change in its stage's code deps only, as DVC does: a profile
    runner or report change leaves trained models current."""
    from pixelzoo.pipeline.provenance import ALL_CODE, stage_code

    root = CPU.parents[1]
    train = stage_code(root, "train")
    assert "src/pixelzoo/training.py" in train and "src/pixelzoo/models" in train
    assert not any(p.startswith(("src/pixelzoo/pipeline/profiles", "src/pixelzoo/report")) for p in train)
    assert "src/pixelzoo/pipeline/provenance.py" in stage_code(root, "report")
    assert stage_code(root, "no_such_stage") == ALL_CODE
