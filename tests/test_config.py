"""The params schema (pixelzoo.pipeline.settings): every shipped params file is valid, and each typo a user
makes is one short message naming its exact place, printed by the stage before any work (no MLflow run)."""

from __future__ import annotations

import copy
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pixelzoo.pipeline import settings as config
from pixelzoo.pipeline.settings import ParamsError

ROOT = Path(__file__).resolve().parents[1]
CI = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
PAPER = yaml.safe_load((ROOT / "params.yaml").read_text())
EXP = "pixelcnn-digits"  # a CI-profile experiment: mutations below are derived from ci/params.yaml
COND = next(k for k, e in CI["experiments"].items() if e.get("conditional"))
PP = "pixelcnn_pp-rgb8"  # the CI profile's PixelCNN++ (discretized logistic mixture head)


def shipped_params() -> dict[str, dict]:
    """params.yaml and the params of every profile (a file or derived by code): each must be valid."""
    from pixelzoo.pipeline.profiles.profile import PROFILES, profile_params

    out = {"params.yaml": config.load_params(ROOT / "params.yaml")}
    for name in PROFILES:
        p = profile_params(name, ROOT)
        out[f"profile {name}"] = p if isinstance(p, dict) else config.load_params(ROOT / p)
    return out


@pytest.mark.parametrize("name", list(shipped_params()))
def test_shipped_params_are_valid(name: str) -> None:
    assert [str(p) for p in config.validate(shipped_params()[name])] == []


def _exp(p: dict, key: str = EXP) -> dict:
    return p["experiments"][key]


def _unlabelled(p: dict) -> None:
    """A class-conditional experiment on a dataset whose source has no labels (binarized MNIST's)."""
    p["sources"]["bm"] = {"kind": "amat"}
    p["datasets"]["bm"] = {"source": "bm", "levels": 2, "seed": 0, "valid_size": None}
    _exp(p, COND)["dataset"] = "bm"


# (id, mutation of ci/params.yaml, the exact path, the rest of the message)
BAD: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("misspelt knob", lambda p: _exp(p).update(epoch=5), f"experiments.{EXP}.epoch",
     "unknown key (did you mean epochs?)"),
    ("epochs text", lambda p: _exp(p).update(epochs="ten"), f"experiments.{EXP}.epochs",
     "must be an integer, got 'ten'"),
    ("negative lr", lambda p: _exp(p).update(optimizer={"lr": -0.1}), f"experiments.{EXP}.optimizer.lr",
     "must be > 0"),
    ("lr as YAML text", lambda p: p["train_defaults"]["optimizer"].update(lr="1e-3"),
     "train_defaults.optimizer.lr", "must be a number, got '1e-3' (YAML reads 1e-3 as text"),
    ("batch 0", lambda p: p["train_defaults"].update(batch_size=0), "train_defaults.batch_size",
     "must be >= 1, got 0"),
    ("unknown model", lambda p: _exp(p).update(model="pixelcn"), f"experiments.{EXP}.model",
     "unknown model 'pixelcn' (did you mean pixelcnn?)"),
    ("misspelt model arg", lambda p: _exp(p)["model_args"].update(hiden=3),
     f"experiments.{EXP}.model_args.hiden", "unknown argument of pixelcnn (did you mean hidden?)"),
    ("model arg type", lambda p: _exp(p)["model_args"].update(residual="yes"),
     f"experiments.{EXP}.model_args.residual", "must be true or false, got 'yes'"),
    ("conditional without labels", _unlabelled, f"experiments.{COND}.conditional",
     "dataset 'bm' has no class labels"),
    ("misspelt section", lambda p: p.update(trackin=p.pop("tracking")), "trackin",
     "unknown key (did you mean tracking?)"),
    ("unknown dataset", lambda p: _exp(p).update(dataset="digit"), f"experiments.{EXP}.dataset",
     "unknown dataset 'digit' (did you mean digits?)"),
    ("unknown source kind", lambda p: p["sources"]["digits"].update(kind="sklearn_digit"),
     "sources.digits.kind", "unknown source kind 'sklearn_digit' (did you mean sklearn_digits?)"),
    ("dataset levels", lambda p: p["datasets"]["digits"].update(levels=32), "datasets.digits.levels",
     "source 'digits' has 17 levels, got 32"),
    ("optimizer argument", lambda p: _exp(p).update(optimizer={"name": "sgd", "betas": [0.9, 0.99]}),
     f"experiments.{EXP}.optimizer.betas", "not an argument of torch.optim.SGD"),
    ("device", lambda p: p["evaluate"].update(device="gpu"), "evaluate.device",
     "must be one of 'auto', 'cpu' or 'cuda', got 'gpu'"),
    ("sampling method", lambda p: p["sample"].update(method="fast"), "sample.method",
     "must be one of 'cached' or 'naive', got 'fast'"),
    ("multi-scale base", lambda p: _exp(p, "multiscale_pixelrnn-digits")["model_args"].update(base="rowlstm"),
     "experiments.multiscale_pixelrnn-digits.model_args.base",
     "must be one of 'row_lstm' or 'diagonal_bilstm', got 'rowlstm' (did you mean row_lstm?)"),
    ("profile banner", lambda p: p.update(profile={"name": "x", "description": "y", "paper_number": True}),
     "profile.paper_number", "unknown key (did you mean paper_numbers?)"),
    ("null epochs", lambda p: p["train_defaults"].update(epochs=None), "train_defaults.epochs",
     "must be an integer, got None"),
    # The PixelCNN++ recipe: EMA decay in [0, 1), learning-rate factor per step in (0, 1]
    ("ema decay 1", lambda p: p["train_defaults"].update(ema_decay=1.0), "train_defaults.ema_decay",
     "must be < 1.0, got 1.0"),
    ("ema decay negative", lambda p: _exp(p, PP).update(ema_decay=-0.5), f"experiments.{PP}.ema_decay",
     "must be >= 0.0, got -0.5"),
    ("ema decay text", lambda p: _exp(p, COND).update(ema_decay="0.9995"), f"experiments.{COND}.ema_decay",
     "must be a number, got '0.9995'"),
    ("lr decay 0", lambda p: _exp(p).update(lr_decay_per_step=0.0), f"experiments.{EXP}.lr_decay_per_step",
     "must be > 0.0, got 0.0"),
    ("lr decay above 1", lambda p: p["train_defaults"].update(lr_decay_per_step=1.5),
     "train_defaults.lr_decay_per_step", "must be <= 1.0, got 1.5"),
    ("mixture count text", lambda p: _exp(p, PP)["model_args"].update(n_mix="x"),
     f"experiments.{PP}.model_args.n_mix", "must be an integer, got 'x'"),
    ("weight norm text", lambda p: _exp(p, PP)["model_args"].update(weight_norm="yes"),
     f"experiments.{PP}.model_args.weight_norm", "must be true or false, got 'yes'"),
    ("weight norm number", lambda p: _exp(p, PP)["model_args"].update(weight_norm=1),
     f"experiments.{PP}.model_args.weight_norm", "must be true or false, got 1"),
]


def _bad_params(mutate: Callable[[dict], None]) -> dict:
    params = copy.deepcopy(CI)
    mutate(params)
    return params


def run_stage(script: str, args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, float]:
    """Run ``stages/<script>`` in this process (as DVC would run it, minus interpreter start-up)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DVC_ROOT", str(cwd))
    monkeypatch.setattr(sys, "argv", [script, *args])
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "stages" / script), run_name="__main__")
    return exit_.value.code, time.perf_counter() - start


@pytest.mark.parametrize(("mutate", "path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_params_fail_fast_at_their_path_without_a_run(
    mutate: Callable[[dict], None], path: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_bad_params(mutate), sort_keys=False))
    code, seconds = run_stage("train.py", [EXP], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and seconds < 20.0  # seconds, even loaded (latency: benchmarks/)
    assert f"  {path}: {message}" in err, err
    assert err.startswith(f"train@{EXP} failed: params.yaml: ") and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # no run


def test_every_problem_is_reported_at_once() -> None:
    # These three hide others when combined (an unknown model has no arguments to check, and so on).
    # "weight norm number" sets the key "weight norm text" sets: combined, only the last would be seen.
    masking = {"unknown model", "unknown source kind", "optimizer argument", "weight norm number"}
    cases = [b for b in BAD if b[0] not in masking]
    params = copy.deepcopy(CI)
    for _, mutate, _, _ in cases:
        mutate(params)
    problems = {str(p) for p in config.validate(params)}
    missing = [f"{path}: {msg}" for _, _, path, msg in cases
               if not any(p.startswith(f"{path}: {msg}") for p in problems)]
    assert not missing and len(problems) >= len(cases)


@pytest.mark.parametrize("n_mix", [0, -1])
def test_a_nonsense_mixture_count_is_a_one_line_params_error_before_any_work(
    n_mix: int, capsys: pytest.CaptureFixture
) -> None:
    """The schema knows n_mix is an integer; its range is the builder's check, which the train stage
    runs (training.check_model) right after reading the data, before the run starts."""
    from pixelzoo import training
    from pixelzoo.errors import run_main

    params = _bad_params(lambda p: _exp(p, PP)["model_args"].update(n_mix=n_mix))
    assert config.validate(params) == []
    cfg = config.resolve_experiment(params, PP)
    meta = {"channels": 3, "levels": 256, "height": 8, "width": 8, "n_classes": 10}
    assert run_main(f"train@{PP}", lambda: training.check_model(cfg, meta)) == 1
    err = capsys.readouterr().err
    assert err == (f"train@{PP} failed: experiments.{PP}.model_args: n_mix (mixture components) must be "
                   f">= 1, got {n_mix}\n")


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert config.main(["check", str(ROOT / "ci" / "params.yaml")]) == 0
    assert f"ok ({len(CI['sources'])} sources, {len(CI['datasets'])} datasets" in capsys.readouterr().out
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(_bad_params(BAD[0][1])))
    assert config.main(["check", str(bad)]) == 1
    assert f"experiments.{EXP}.epoch: unknown key" in capsys.readouterr().err


def test_unknown_experiment_and_missing_inputs_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(CI))
    code, _ = run_stage("train.py", ["pixelcnn-digit"], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and "unknown experiment 'pixelcnn-digit' (did you mean pixelcnn-digits?)" in err
    code, _ = run_stage("train.py", [EXP], tmp_path, monkeypatch)  # valid params, no processed data
    err = capsys.readouterr().err
    assert code == 1 and "meta.json not found: build it with `dvc repro preprocess@digits`" in err
    code, _ = run_stage("preprocess.py", ["digits"], tmp_path, monkeypatch)  # nothing downloaded
    err = capsys.readouterr().err
    assert code == 1 and "not (completely) downloaded" in err and "dvc repro download@digits" in err
    assert "Traceback" not in err and not (tmp_path / "mlflow.db").exists()


def test_resolve_experiment_and_digest() -> None:
    cfg = config.resolve_experiment(PAPER, "seed004_pixelcnn-mnist4")
    assert cfg["optimizer"] == {"name": "adam", "lr": 1.0e-4} and cfg["batch_size"] == 32
    assert cfg["device"] == PAPER["train_defaults"]["device"] and cfg["name"] == "seed004_pixelcnn-mnist4"
    stage = config.stage_config(PAPER, "seed004_pixelcnn-mnist4", "sample")
    assert stage["sample"] == PAPER["sample"]
    assert config.config_digest(cfg) == config.config_digest(copy.deepcopy(cfg))
    assert config.config_digest(cfg) != config.config_digest({**cfg, "seed": 1})
    with pytest.raises(ParamsError, match="did you mean pixelcnn-cifar10"):
        config.resolve_experiment(PAPER, "pixelcnn-cifar")


def test_a_new_model_argument_needs_no_schema_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    """model_args come from the builder's signature: a new keyword is accepted, and type-checked."""
    from pixelzoo.models import registry

    original = registry._BUILDERS["pixelcnn"]

    def build(*, channels: int, levels: int, height: int, width: int, n_classes: int | None = None,
              dilation: int = 1, **args: object) -> object:
        return original(channels=channels, levels=levels, height=height, width=width, n_classes=n_classes,
                        **args)

    monkeypatch.setitem(registry._BUILDERS, "pixelcnn", build)
    monkeypatch.setitem(registry._FORWARDS, "pixelcnn", (original,))  # where its **args go
    params = copy.deepcopy(CI)
    _exp(params)["model_args"] = {"dilation": 2}
    assert config.validate(params) == []
    _exp(params)["model_args"] = {"dilation": "2"}
    assert [str(p) for p in config.validate(params)] == [
        f"experiments.{EXP}.model_args.dilation: must be an integer, got '2'"]
