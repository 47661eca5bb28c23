"""CI-scale NLL regression: the real stages on offline data, compared with ci/baseline.json.

Also proves the gate bites: a planted causality leak and a planted training bug each make it fail.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from pixelzoo.pipeline.profiles import regression

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
PLANT_EXP = "pixelcnn-digits"


def test_profile_covers_every_registered_model_and_rgb() -> None:
    from pixelzoo.models import registered

    exps = PROFILE["experiments"].values()
    assert {e["model"] for e in exps} == set(registered())
    rgb = [e for e in exps if PROFILE["sources"][PROFILE["datasets"][e["dataset"]]["source"]]["kind"]
           == "cifar10_fixture" and PROFILE["datasets"][e["dataset"]]["levels"] == 256]
    assert rgb, "at least one 3-channel, 256-level experiment must go through the CIFAR-10 loader"


def test_profile_has_real_28x28_data_installed() -> None:
    """The real-data experiments read Debian's Fashion-MNIST: absent, this fails with the install command."""
    from pixelzoo.data.sources import missing_mirrors

    real = [e for e in PROFILE["experiments"].values()
            if PROFILE["sources"][PROFILE["datasets"][e["dataset"]]["source"]]["kind"] == "fashion_mnist"]
    assert real, "the CI profile must train on real 28×28 images (a fashion_mnist source)"
    missing = missing_mirrors(PROFILE["sources"])
    assert not missing, "\n".join(missing)


def test_nll_matches_committed_baseline(ci_run) -> None:
    ok, table = regression.check(ci_run.root, ROOT)
    print(table)
    assert ok, "\n" + table


def test_nll_is_meaningful(ci_run) -> None:
    """Every model beats the uniform distribution over its levels (log2 K bits/dim) by at least half a bit."""
    for exp, cfg in PROFILE["experiments"].items():
        m = json.loads((ci_run.root / "metrics" / f"{exp}.json").read_text())
        levels = PROFILE["datasets"][cfg["dataset"]]["levels"]
        assert m["test_bits_per_dim"] < math.log2(levels) - 0.5, (exp, m["test_bits_per_dim"])


def test_profile_modifies_no_tracked_file(ci_run) -> None:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    generated = ("metrics/", "dvc.lock", "reports/")
    changed = [line for line in status.splitlines() if line[3:].startswith(generated)]
    assert not changed, changed


def _gate_rows(run_root: Path) -> dict[str, regression.Row]:
    return {r.experiment: r for r in regression.compare(run_root, ROOT)}


def test_planted_causality_leak_fails_the_gate(ci_run, tmp_path: Path) -> None:
    """Unmask the centre of every mask-A layer: the model sees the pixel it predicts; NLL drops."""
    run = ci_run.copy(tmp_path / "leak")
    masks = run.root / "src" / "pixelzoo" / "nn" / "masks.py"
    src = masks.read_text()
    line = 'centre = g_in < g_out if mask_type == "A"'
    planted = src.replace(line, line.replace("<", "<="))
    assert planted != src
    masks.write_text(planted)
    run.repro(f"evaluate@{PLANT_EXP}")
    row = _gate_rows(run.root)[PLANT_EXP]
    print(regression.format_table([row]))
    assert row.status == "BETTER?"
    ok, table = regression.check(run.root, ROOT)
    assert not ok and "causality leak" in table


def test_planted_learning_rate_bug_fails_the_gate(ci_run, tmp_path: Path) -> None:
    """A broken schedule (learning rate 10^4 times too small): the model barely trains; NLL rises."""
    run = ci_run.copy(tmp_path / "lr")
    training = run.root / "src" / "pixelzoo" / "training.py"
    src = training.read_text()
    anchor = "    return getattr(torch.optim, OPTIMIZERS[name])(params, **opt_cfg)"
    assert anchor in src
    training.write_text(src.replace(anchor, '    opt_cfg["lr"] = opt_cfg["lr"] * 1e-4\n' + anchor))
    run.repro(f"evaluate@{PLANT_EXP}")
    row = _gate_rows(run.root)[PLANT_EXP]
    print(regression.format_table([row]))
    assert row.status == "WORSE"
    assert not regression.check(run.root, ROOT)[0]
