"""Using what was trained: the `pixelzoo` command, `pixelzoo.load`, the registry's alias rule, the dvc.yaml
artifacts, the Fashion-MNIST fallback of `make quick`, and the docs' commands and Python snippet run as
written (README.md in a fresh clone, docs/use.md). One tiny model (digits, 4 steps) is trained once for the
module, without DVC."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pixelzoo import artifacts, cli
from pixelzoo.data import sources
from pixelzoo.data.preprocess import preprocess
from pixelzoo.evaluation import evaluate_with_map
from pixelzoo.pipeline.settings import load_params, resolve_experiment

ROOT = Path(__file__).resolve().parents[1]
EXP = "pixelcnn-digits"  # an experiment of ci/params.yaml: the name docs/use.md uses
DOC = ROOT / "docs" / "use.md"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout-like folder: dvc.yaml, the digits data and outputs/pixelcnn-digits/train/model.pt."""
    from pixelzoo.training import train

    root = tmp_path_factory.mktemp("use")
    (root / "dvc.yaml").write_text("stages: {}\n")
    params = load_params(ROOT / "ci" / "params.yaml")
    sources.download_source("digits", params["sources"]["digits"], root / "data" / "raw" / "digits")
    preprocess("digits", params, root / "data" / "raw", root / "data" / "processed")
    cfg = {**resolve_experiment(params, EXP), "epochs": 1, "max_steps": 4}
    train(cfg, root / "data" / "processed" / "digits", root / "outputs" / EXP / "train", root / "scratch")
    return root


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repo)
    return repo


HEAVY = ("torch", "mlflow", "pydantic", "numpy", "pixelzoo.api")


@pytest.mark.parametrize("command", ["", *cli.PASSTHROUGH, "sample", "score", "complete"])
def test_help_answers_without_torch_mlflow_or_pydantic(command: str) -> None:
    """`python -m pixelzoo.cli COMMAND --help` as run, its imports read from -X importtime (their times:
    benchmarks/README.md#the-pixelzoo-command)."""
    argv = [sys.executable, "-X", "importtime", "-m", "pixelzoo.cli", *[command][: bool(command)], "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: pixelzoo {command}".rstrip()), proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.count("|") == 2}
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY)
    assert not heavy, heavy
    if not command:
        assert all(name in proc.stdout for name in ("sample", "score", "complete", *cli.PASSTHROUGH))


def test_usage_error_of_a_delegated_command_answers_without_its_module() -> None:
    code = ("import sys\nfrom pixelzoo import cli\ntry:\n"
            "    cli.main(['lineage', 'pixelcnn-digits', '--bogus'])\n"
            "except SystemExit as e:\n    assert e.code == 2\n"
            "assert 'pixelzoo.pipeline.lineage' not in sys.modules and 'mlflow' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "pixelzoo lineage: error: unrecognized arguments: --bogus" in proc.stderr


def test_load_gives_evaluate_numbers_exactly(in_repo: Path) -> None:
    import pixelzoo

    model = pixelzoo.load(EXP)
    assert model.shape == (1, 8, 8) and model.levels == 17 and model.config["name"] == EXP
    x = torch.from_numpy(np.load(in_repo / "data/processed/digits/test.npz")["x"])
    _, bits = evaluate_with_map(model.module, x, None, 100, "cpu", n_examples=0)  # what evaluate runs
    nats = model.nll(x)
    assert nats.dtype == torch.float64 and len(nats) == 360
    assert np.array_equal(nats.numpy(), bits.image_nats)
    assert torch.equal(model.log_prob(x), -nats)
    assert torch.allclose(model.bits_per_dim(x), nats / (64 * np.log(2)), rtol=0, atol=1e-12)
    same = pixelzoo.load(in_repo / "outputs" / EXP / "train")  # a folder, e.g. from `dvc artifacts get`
    assert np.array_equal(same.nll(x).numpy(), bits.image_nats)


def test_sample_methods_agree_and_complete_keeps_known_pixels(in_repo: Path) -> None:
    import pixelzoo

    model = pixelzoo.load(EXP)
    a = model.sample(3, seed=7)
    assert torch.equal(a, model.sample(3, seed=7, method="naive")) and a.shape == (3, 1, 8, 8)
    assert not torch.equal(a, model.sample(3, seed=8))
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[:3] = True
    filled = model.complete(a, known, seed=1)
    assert torch.equal(filled[:, :, :3], a[:, :, :3]) and int(filled.max()) < 17


@pytest.mark.parametrize("bad, says", [
    (np.zeros((2, 1, 9, 8), np.uint8), "expects N×1×8×8"),
    (np.zeros((2, 3, 8, 8), np.uint8), "expects N×1×8×8"),
    (np.full((2, 1, 8, 8), 17, np.uint8), "expects [0, 17)"),
    (np.zeros((2, 1, 8, 8), np.float32), "expects integer levels"),
])
def test_wrong_images_are_one_clear_error(in_repo: Path, bad: np.ndarray, says: str) -> None:
    import pixelzoo
    from pixelzoo.api import InputError

    with pytest.raises(InputError, match=re.escape(says)):
        pixelzoo.load(EXP).nll(bad)


def test_cli_sample_score_complete(in_repo: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    assert cli.main(["sample", EXP, "-n", "4", "--seed", "3", "-o", "g.png", "--npz", "s.npz"]) == 0
    assert cli.main(["sample", EXP, "-n", "4", "--seed", "3", "--method", "naive", "-o", "n.png"]) == 0
    assert Path("g.png").read_bytes() == Path("n.png").read_bytes()
    assert cli.main(["score", EXP, "s.npz", "-o", "nll.csv"]) == 0
    rows = list(csv.DictReader(open("nll.csv")))
    import pixelzoo

    want = pixelzoo.load(EXP).nll(np.load("s.npz")["x"])
    assert [float(r["nats"]) for r in rows] == want.tolist()  # every digit, as computed
    # PNGs: quantized as the dataset (floor(v·17/256)) round-trips the sampler's grid scaling
    first = np.load("s.npz")["x"][:1]
    Image.fromarray((first[0, 0].astype(np.float64) * 255 / 16 + 0.5).astype(np.uint8)).save("one.png")
    assert cli.main(["score", EXP, "one.png", "-o", "png.csv"]) == 0
    assert float(next(csv.DictReader(open("png.csv")))["nats"]) == pixelzoo.load(EXP).nll(first).item()
    assert cli.main(["complete", EXP, "one.png", "--keep-rows", "4", "-n", "2", "-o", "c.png"]) == 0
    assert Image.open("c.png").size == (3 * 9 + 1, 10)
    assert "2 completion(s)" in capsys.readouterr().out


@pytest.mark.parametrize("make, says", [
    (lambda: Image_save(np.zeros((28, 28), np.uint8)), "is 28×28 pixels; pixelcnn-digits expects 8×8"),
    (lambda: Image_save(np.zeros((8, 8, 3), np.uint8)), "has PNG mode RGB (3 channel(s))"),
    (lambda: np.savez("x.npz", x=np.full((1, 1, 8, 8), 99, np.uint8)) or "x.npz", "hold levels in [99, 99]"),
])
def test_cli_bad_input_is_one_line(in_repo: Path, capsys: pytest.CaptureFixture, make, says: str) -> None:
    path = make()
    assert cli.main(["score", EXP, path, "-o", "out.csv"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pixelzoo score: ") and says in err, err
    assert cli.main(["score", "no-such-exp", path, "-o", "out.csv"]) == 1
    assert "dvc repro train@no-such-exp" in capsys.readouterr().err


def Image_save(a: np.ndarray) -> str:  # noqa: N802 - a helper of the parametrization above
    from PIL import Image

    Image.fromarray(a).save("img.png")
    return "img.png"


def test_docs_quick_start_and_python_snippet_run_as_written(repo: Path, tmp_path: Path) -> None:
    """README.md's "Use a trained model", run in a fresh `git clone` of this checkout (its committed HEAD)
    with this venv's `pixelzoo` on PATH: `make quick` is checked by its recipe (`make -n`; the run itself
    takes minutes) and stood in for by this module's tiny model in the clone's .work/quick/; the lines
    after it run verbatim in bash, then the Python snippet. docs/use.md's Python API snippet runs too."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    text = (clone / "README.md").read_text()
    section = text.split("## Use a trained model\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert block.startswith("make quick\nsource .venv/bin/activate"), block
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # under `make test`: no "Entering directory" lines
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "quick"], cwd=clone, capture_output=True,
                         text=True, check=True,  # -o: this test never installs
                         env={k: v for k, v in os.environ.items() if k not in outer}).stdout.splitlines()
    assert "ci/system-deps.sh dataset-fashion-mnist" in dry[0] and "pixelzoo.profile quick" in dry[1], dry
    shutil.copytree(repo, clone / ".work" / "quick")  # what `make quick` leaves there, at toy size
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the venv `make quick` made
    env = {"PYTHONPATH": str(clone / "src"), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path),
           "PATH": "/usr/bin:/bin"}  # `pixelzoo` comes on PATH only through the README's activate line
    rest = block.split("\n", 1)[1]
    proc = subprocess.run(["bash", "-euc", rest], cwd=clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{rest}\n{proc.stdout}\n{proc.stderr}"
    assert "16 samples of pixelcnn-digits" in proc.stdout and "scored 16 image(s)" in proc.stdout
    assert len((clone / ".work/quick/nll.csv").read_text().splitlines()) == 17
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=clone / ".work/quick", env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("tensor(["), proc.stderr
    doc = re.search(r"## Python API\n\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        exec(compile(doc, str(DOC), "exec"), {})


def test_every_experiment_is_a_dvc_artifact() -> None:
    """dvc.yaml's artifacts block is the one params.yaml gives, and DVC reads it as typed model artifacts."""
    assert artifacts.in_sync(ROOT), "run `pixelzoo artifacts --write`"
    from dvc.repo import Repo

    declared = Repo(str(ROOT)).artifacts.read()["dvc.yaml"]
    experiments = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]
    assert set(declared) == set(experiments)
    for key, art in declared.items():
        assert art.type == "model" and art.path == f"outputs/{key}/train" and art.desc and art.labels


def test_registry_alias_moves_only_to_a_better_version(tmp_path: Path) -> None:
    """The evaluate-side op (pixelzoo.model_registry.set_best_alias) on a local store."""
    from mlflow import MlflowClient

    from pixelzoo import model_registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model("m")
    runs = [client.create_run(exp).info.run_id for _ in range(3)]
    for r in runs:
        client.create_model_version("m", source=(tmp_path / r).as_uri(), run_id=r)
    steps = [(runs[0], 3.0, "1"), (runs[1], 3.5, "1"), (runs[2], 2.9, "3"), (runs[2], 2.9, "3")]
    for run, bpd, best in steps:
        model_registry.set_best_alias(uri, "eval-run", "m", run, bpd)
        assert str(client.get_model_version_by_alias("m", "best").version) == best
    assert client.get_model_version("m", "2").tags[model_registry.TAG_TEST_BPD] == "3.5"
    assert model_registry.set_best_alias(uri, "e", "m", "no-such-run", 1.0) is None
    assert model_registry.set_best_alias(uri, "e", "no-such-model", runs[0], 1.0) is None


def test_fashion_mnist_falls_back_to_torchvision_mirror_then_says_both_ways(tmp_path: Path) -> None:
    spec = {"kind": "fashion_mnist", "mirror": str(tmp_path / "no-debian-copy")}
    asked: list[str] = []

    def offline(url: str, dest: Path, timeout: float = 0) -> None:
        asked.append(url)
        raise urllib.error.URLError("no network")

    original = sources._http_get
    sources._http_get = offline
    try:
        with pytest.raises(sources.DataError) as err:
            sources.download_source("fashion_mnist", spec, tmp_path / "raw")
    finally:
        sources._http_get = original
    assert asked and asked[0].startswith(sources.FASHION_MIRRORS[0])  # torchvision's mirror, not the folder
    msg = str(err.value)
    assert sources.FASHION_INSTALL in msg and "connect to the internet" in msg
    notes, problems = sources.unobtainable_mirrors({"f": spec}, reachable=lambda url: True)
    assert not problems and "fetches the files from" in notes[0]
    notes, problems = sources.unobtainable_mirrors({"f": spec}, reachable=lambda url: False)
    assert not notes and sources.FASHION_INSTALL in problems[0] and "connect to the internet" in problems[0]


def test_make_quick_installs_its_system_package_first() -> None:
    proc = subprocess.run(["make", "-n", "quick"], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines()
             if "system-deps.sh" in line or "pixelzoo.profile" in line]
    assert "ci/system-deps.sh dataset-fashion-mnist" in lines[0] and "pixelzoo.profile quick" in lines[1]
