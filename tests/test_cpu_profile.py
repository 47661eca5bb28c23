"""The CPU profile (ci/cpu.yaml): what the issue asks of it, read from the file itself.

Its end-to-end run takes ~45 minutes and is not part of the test suite; these checks are instant.
"""

from __future__ import annotations

from pathlib import Path

from pixelzoo.data.preprocess import resolve_dataset
from pixelzoo.data.sources import FASHION_DEBIAN_DIR, missing_mirrors
from pixelzoo.models import registered
from pixelzoo.pipeline.profiles.profile import PROFILES
from pixelzoo.pipeline.settings import load_params, resolve_experiment

ROOT = Path(__file__).resolve().parents[1]
CPU = load_params(ROOT / PROFILES["cpu"])
EXPS = {k: resolve_experiment(CPU, k) for k in CPU["experiments"]}
PIXELRNN_BMNIST = {"layers": 7, "hidden": 16, "head_hidden": 32}  # PixelRNN Table 4's model size


def test_profile_section_says_these_are_not_paper_numbers() -> None:
    assert CPU["profile"]["name"] == "cpu" and CPU["profile"]["paper_numbers"] is False
    assert CPU["profile"]["description"].strip()


def test_every_architecture_at_the_pixelrnn_binarized_mnist_size() -> None:
    assert {c["model"] for c in EXPS.values()} == set(registered())
    for model in ("pixelcnn", "row_lstm", "diagonal_bilstm", "gated_pixelcnn", "multiscale_pixelrnn"):
        sized = [c for c in EXPS.values() if c["model"] == model
                 and PIXELRNN_BMNIST.items() <= c["model_args"].items()]
        assert sized, f"no {model} at 7 layers, h=16, 32 output maps"
    one_layer = {"layers": 1, "hidden": 32, "head_hidden": 32}
    assert any(c["model"] == "diagonal_bilstm" and c["model_args"] == one_layer for c in EXPS.values())
    assert any(c["model"] == "gated_pixelcnn" and c["conditional"] for c in EXPS.values())
    seed004 = [c for c in EXPS.values() if c["model"] == "seed004_pixelcnn"]
    assert seed004 and all(c["dataset"] == "fashion4" and c["conditional"] for c in seed004)


def test_full_fashion_mnist_from_the_debian_mirror() -> None:
    for name in {c["dataset"] for c in EXPS.values()}:
        entry, spec = resolve_dataset(name, CPU)
        assert spec == {"kind": "fashion_mnist", "mirror": FASHION_DEBIAN_DIR}
        assert entry["n_train"] is None and entry["n_test"] is None  # all 60,000 + 10,000 images
        assert entry["valid_size"] and entry["valid_size"] < 60_000
        assert {c["eval_split"] for c in EXPS.values() if c["dataset"] == name} == {"test"}
    assert not missing_mirrors(CPU["sources"]), missing_mirrors(CPU["sources"])


def test_one_budget_of_images_seen_for_every_experiment() -> None:
    """Equal images seen (steps × batch, at most one pass over the training split), CPU, fp32."""
    seen = {k: int(c["max_steps"]) * int(c["batch_size"]) for k, c in EXPS.items()}
    assert len(set(seen.values())) == 1, seen
    assert next(iter(seen.values())) <= 60_000 - max(d["valid_size"] for d in CPU["datasets"].values())
    assert {(c["device"], c["precision"]) for c in EXPS.values()} == {("cpu", "fp32")}


def test_samples_use_the_cached_sampler() -> None:
    assert CPU["sample"]["method"] == "cached"


def test_profile_without_its_real_data_stops_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    from pixelzoo.data.sources import FASHION_INSTALL
    from pixelzoo.pipeline.profiles import profile

    params = tmp_path / "cpu.yaml"
    params.write_text((ROOT / PROFILES["cpu"]).read_text().replace(FASHION_DEBIAN_DIR, str(tmp_path / "no")))
    monkeypatch.setitem(profile.PROFILES, "cpu", str(params))
    monkeypatch.setattr("pixelzoo.data.sources._reachable", lambda url: False)  # offline: no fallback
    assert profile.main(["cpu", "--workdir", str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "no") in err and FASHION_INSTALL in err
    assert not (tmp_path / "work").exists()


def test_only_an_unknown_experiment_stops_before_any_work(tmp_path: Path, capsys) -> None:
    from pixelzoo.pipeline.profiles import profile

    assert profile.main(["cpu", "--workdir", str(tmp_path / "work"), "--only", "pixelcnn-fashion256",
                         "pixelcnn-fashoin256"]) == 1
    err = capsys.readouterr().err
    assert "--only pixelcnn-fashoin256: no such experiment" in err and "pixelcnn-fashion256," in err
    assert not (tmp_path / "work").exists()
