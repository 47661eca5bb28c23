"""Sources: download (mocked network), checksums, quarantine, manifests, and the loader of every kind."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from pixelzoo import integrity
from pixelzoo.data import formats, sources
from pixelzoo.errors import run_main
from pixelzoo.pipeline.settings import ParamsError


def _offline(url: str, dest: Path) -> None:
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def _amat_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Small real-format .amat files; the amat kind's expected sha256s point at them."""
    rng = np.random.default_rng(0)
    blobs = {}
    for split, n in (("train", 6), ("valid", 3), ("test", 4)):
        p = tmp_path / f"{split}.amat"
        formats.write_amat(p, (rng.random((n, 28, 28)) > 0.7).astype(np.uint8))
        blobs[f"binarized_mnist_{split}.amat"] = p.read_bytes()
    files = tuple(sources.RemoteFile(name, (f"http://example.invalid/{name}",),
                                     hashlib.sha256(b).hexdigest()) for name, b in blobs.items())
    monkeypatch.setitem(sources.REMOTE_FILES, "amat", files)
    return blobs


def test_download_then_load_amat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = _amat_files(tmp_path, monkeypatch)
    calls = []

    def serve(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(blobs[url.rsplit("/", 1)[1]])

    raw = tmp_path / "raw" / "binarized_mnist"
    manifest = sources.download_source("binarized_mnist", {"kind": "amat"}, raw, get=serve)
    assert len(calls) == 3 and set(manifest["files"]) == set(blobs)
    assert json.loads((raw / sources.MANIFEST).read_text()) == manifest
    src = sources.load_source("binarized_mnist", {"kind": "amat"}, raw)
    assert {s: len(x) for s, (x, _) in src.splits.items()} == {"train": 6, "valid": 3, "test": 4}
    x, y = src.splits["valid"]
    assert x.shape == (3, 1, 28, 28) and set(np.unique(x)) <= {0, 1} and (y == -1).all()
    assert src.levels == 2 and src.n_classes is None
    # Already present with good checksums: nothing is fetched again.
    sources.download_source("binarized_mnist", {"kind": "amat"}, raw, get=serve)
    assert len(calls) == 3


def test_offline_fails_fast_naming_urls_and_exact_paths(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_http_get", _offline)  # the stage's default network call
    raw = tmp_path / "raw" / "mnist"
    t0 = time.perf_counter()
    with pytest.raises(sources.DataError) as err:
        sources.download_source("mnist", {"kind": "torchvision_mnist"}, raw)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    for rf in sources.REMOTE_FILES["torchvision_mnist"]:
        assert rf.urls[0] in msg and str((raw / rf.path).resolve()) in msg and rf.sha256 in msg
    assert "Name or service not known" in msg and "dvc repro download@mnist" in msg
    assert not (raw / sources.MANIFEST).exists()
    assert not list(raw.rglob("*.part"))


def test_corrupt_file_is_moved_aside_with_both_hashes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = _amat_files(tmp_path, monkeypatch)
    raw = tmp_path / "raw" / "binarized_mnist"
    raw.mkdir(parents=True)
    for name, b in blobs.items():
        (raw / name).write_bytes(b)
    bad = raw / "binarized_mnist_valid.amat"
    bad.write_bytes(b"0 1\n")
    actual = hashlib.sha256(b"0 1\n").hexdigest()
    expected = hashlib.sha256(blobs[bad.name]).hexdigest()
    with pytest.raises(sources.DataError) as err:
        sources.download_source("binarized_mnist", {"kind": "amat"}, raw, get=_offline)
    msg = str(err.value)
    assert str(bad) in msg and expected in msg and actual in msg
    kept = raw.with_name("binarized_mnist.corrupt") / bad.name
    assert kept.read_bytes() == b"0 1\n" and str(kept) in msg
    assert not bad.exists() and not (raw / sources.MANIFEST).exists()
    # A bad download is quarantined too, and the good mirror-less retry reports it.
    with pytest.raises(sources.DataError, match="downloaded file has sha256"):
        sources.download_source("binarized_mnist", {"kind": "amat"}, raw,
                                get=lambda url, dest: dest.write_bytes(b"junk"))
    assert len(list(kept.parent.iterdir())) == 2


def test_load_refuses_incomplete_or_modified_source(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "digits"
    with pytest.raises(sources.DataError, match="download@digits"):
        sources.load_source("digits", {"kind": "sklearn_digits"}, raw)
    sources.download_source("digits", {"kind": "sklearn_digits"}, raw)
    (raw / sources.DIGITS_FILE).write_bytes(b"tampered")
    with pytest.raises(sources.DataError, match="differs from"):
        sources.load_source("digits", {"kind": "sklearn_digits"}, raw)


def test_digits_source(tmp_path: Path) -> None:
    raw = tmp_path / "digits"
    sources.download_source("digits", {"kind": "sklearn_digits"}, raw)
    src = sources.load_source("digits", {"kind": "sklearn_digits"}, raw)
    x, y = src.splits["train"]
    assert list(src.splits) == ["train"] and x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8
    assert len(np.unique(x)) == 17 and src.levels == 17 and sorted(np.unique(y)) == list(range(10))


def test_mnist_loader_on_idx_files_in_torchvision_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    raw = tmp_path / "mnist"
    (raw / "MNIST" / "raw").mkdir(parents=True)
    arrays = {"train": (rng.integers(0, 256, (9, 28, 28), dtype=np.uint8), rng.integers(0, 10, 9)),
              "t10k": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5))}
    for prefix, (x, y) in arrays.items():
        formats.write_idx_gz(raw / f"MNIST/raw/{prefix}-images-idx3-ubyte.gz", x)
        formats.write_idx_gz(raw / f"MNIST/raw/{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    files = {rf.path: integrity.file_sha256(raw / rf.path)
             for rf in sources.REMOTE_FILES["torchvision_mnist"]}
    (raw / sources.MANIFEST).write_text(json.dumps({"kind": "torchvision_mnist", "files": files}))
    src = sources.load_source("mnist", {"kind": "torchvision_mnist"}, raw)
    np.testing.assert_array_equal(src.splits["test"][0][:, 0], arrays["t10k"][0])
    np.testing.assert_array_equal(src.splits["train"][1], arrays["train"][1])
    assert src.splits["train"][1].dtype == np.int64 and src.levels == 256


def test_cifar10_fixture_is_deterministic_coloured_digits(tmp_path: Path) -> None:
    spec = {"kind": "cifar10_fixture", "n_train": 40, "n_test": 10, "size": 16, "seed": 7}
    a = sources.download_source("fx", spec, tmp_path / "a")
    b = sources.download_source("fx", spec, tmp_path / "b")
    c = sources.download_source("fx", {**spec, "seed": 8}, tmp_path / "c")
    assert a["files"] == b["files"] != c["files"]
    # Read back through the same reader as the real CIFAR-10 source.
    src = sources.load_source("fx", spec, tmp_path / "a")
    x, y = src.splits["train"]
    assert x.shape == (40, 3, 16, 16) and len(src.splits["test"][0]) == 10
    assert len(np.unique(x)) > 100  # 256-level colour images, not a few flat values
    # The digit is visible: each image spans a large range in every channel.
    span = x.reshape(40, 3, -1).max(-1).astype(int) - x.reshape(40, 3, -1).min(-1)
    assert (span >= 60).all()
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) > 5


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "nope"}, r"sources\.s\.kind: unknown source kind 'nope'"),
        ({"kind": "amat", "extra": 1}, r"sources\.s\.extra: unknown key"),
        ({"kind": "cifar10_fixture", "n_train": 4, "n_test": 1, "size": 16, "seed": 0},
         r"sources\.s\.n_train: must be >= 5, got 4"),
        ({"kind": "cifar10_fixture", "n_train": 10, "n_test": 1, "size": "16", "seed": 0},
         r"sources\.s\.size: must be an integer, got '16'"),
    ],
)
def test_bad_source_params(tmp_path: Path, spec: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        sources.download_source("s", spec, tmp_path / "s")
    assert not (tmp_path / "s").exists()  # rejected before any work


def test_download_stage_script_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "stages" / "download.py"
    spec = importlib.util.spec_from_file_location("download_stage", script)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.setattr(sources, "_http_get", _offline)
    params = Path(__file__).resolve().parents[1] / "params.yaml"  # the real one: it is validated first
    code = run_main("download@cifar10", lambda: stage.main(["cifar10", "--params", str(params),
                                                            "--raw-root", str(tmp_path / "raw")]))
    err = capsys.readouterr().err
    assert code == 1 and sources.CIFAR10_URL in err and "Traceback" not in err
    assert str((tmp_path / "raw" / "cifar10" / sources.CIFAR10_FILE).resolve()) in err


# --- Fashion-MNIST: gzipped IDX files, verified by their decompressed content -----------------------------

def _fashion_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A mirror folder of small real-format files (gzipped IDX); the kind's content sha256s point at them."""
    rng = np.random.default_rng(5)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (9, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 9).astype(np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 4).astype(np.uint8)}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, a in arrays.items():
        formats.write_idx_gz(mirror / name, a)
    # The real names and URLs; only the expected content hashes are those of these small files.
    files = tuple(dataclasses.replace(rf, sha256=sources.sha256_gunzip(mirror / Path(rf.path).name))
                  for rf in sources.REMOTE_FILES["fashion_mnist"])
    monkeypatch.setitem(sources.REMOTE_FILES, "fashion_mnist", files)
    return mirror, arrays


def test_fashion_mnist_from_mirror_folder_then_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror, arrays = _fashion_mirror(tmp_path, monkeypatch)
    spec = {"kind": "fashion_mnist", "mirror": str(mirror)}
    raw = tmp_path / "raw" / "fashion"
    manifest = sources.download_source("fashion", spec, raw)
    assert json.loads((raw / sources.MANIFEST).read_text()) == manifest
    for rf in sources.REMOTE_FILES["fashion_mnist"]:  # both hashes recorded: the file's and its content's
        assert manifest["files"][rf.path] == integrity.file_sha256(mirror / Path(rf.path).name)
        assert manifest["contents_sha256"][rf.path] == rf.sha256
    src = sources.load_source("fashion", spec, raw)
    np.testing.assert_array_equal(src.splits["train"][0][:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(src.splits["test"][1], arrays["t10k-labels-idx1-ubyte.gz"])
    assert src.splits["test"][1].dtype == np.int64 and src.levels == 256 and src.n_classes == 10


def test_fashion_mnist_recompressed_mirror_is_accepted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian re-compressed the files: other .gz bytes, same data. Only the content decides."""
    mirror, _ = _fashion_mirror(tmp_path, monkeypatch)
    first = sources.download_source("f", {"kind": "fashion_mnist", "mirror": str(mirror)}, tmp_path / "a")
    for path in mirror.iterdir():
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=12345))
    second = sources.download_source("f", {"kind": "fashion_mnist", "mirror": str(mirror)}, tmp_path / "b")
    assert all(first["files"][f] != second["files"][f] for f in first["files"])
    assert first["contents_sha256"] == second["contents_sha256"]


def test_fashion_mnist_wrong_or_missing_mirror_file_is_rejected(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mirror, arrays = _fashion_mirror(tmp_path, monkeypatch)
    spec = {"kind": "fashion_mnist", "mirror": str(mirror)}
    bad = arrays["t10k-images-idx3-ubyte.gz"].copy()
    bad[0, 0, 0] ^= 1  # one pixel: a valid IDX file with the wrong data
    formats.write_idx_gz(mirror / "t10k-images-idx3-ubyte.gz", bad)
    (mirror / "train-labels-idx1-ubyte.gz").unlink()
    raw = tmp_path / "raw" / "f"
    with pytest.raises(sources.DataError) as err:
        sources.download_source("f", spec, raw)
    msg = str(err.value)
    rf = {Path(r.path).name: r for r in sources.REMOTE_FILES["fashion_mnist"]}
    bad_file = mirror / "t10k-images-idx3-ubyte.gz"
    actual = hashlib.sha256(gzip.decompress(bad_file.read_bytes())).hexdigest()
    expected = rf["t10k-images-idx3-ubyte.gz"].sha256
    assert f"{bad_file}: downloaded file has sha256 of the decompressed content {actual}, " \
           f"expected {expected}" in msg
    assert f"{mirror / 'train-labels-idx1-ubyte.gz'}: no such file" in msg
    assert "2 file(s) could not be obtained" in msg and sources.FASHION_INSTALL in msg
    assert str((raw / rf["train-labels-idx1-ubyte.gz"].path).resolve()) in msg
    assert not (raw / sources.MANIFEST).exists() and not (raw / rf["t10k-images-idx3-ubyte.gz"].path).exists()
    kept = raw.with_name("f.corrupt") / (rf["t10k-images-idx3-ubyte.gz"].path + ".part")
    assert kept.exists() and f"moved aside to {kept}" in msg
    # A file in place that is not gzip at all is reported as such, not as a crash.
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(sources.DataError, match="not a readable gzip file"):
        sources.download_source("f", spec, raw)


def test_fashion_mnist_download_through_torchvision_urls(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mirror, _ = _fashion_mirror(tmp_path, monkeypatch)
    served = []

    def serve(url: str, dest: Path) -> None:
        served.append(url)
        dest.write_bytes((mirror / url.rsplit("/", 1)[1]).read_bytes())

    raw = tmp_path / "raw"
    sources.download_source("f", {"kind": "fashion_mnist"}, raw, get=serve)
    names = [Path(rf.path).name for rf in sources.REMOTE_FILES["fashion_mnist"]]
    assert served == [sources.FASHION_MIRRORS[0] + n for n in names]
    assert all((raw / sources.FASHION_DIR / n).is_file() for n in os.listdir(mirror))  # torchvision's layout


def test_fashion_mnist_names_and_mirror_match_torchvision() -> None:
    from torchvision.datasets import FashionMNIST

    assert sources.FASHION_MIRRORS == tuple(FashionMNIST.mirrors)
    names = [Path(rf.path).name for rf in sources.REMOTE_FILES["fashion_mnist"]]
    assert names == [n for n, _ in FashionMNIST.resources]
    assert f"{sources.FASHION_DIR}/" == f"{FashionMNIST.__name__}/raw/"


def test_debian_fashion_mnist_has_the_recorded_content() -> None:
    """The real data (Debian's copy) passes the recorded content hashes: the hashes are the data's."""
    folder = Path(sources.FASHION_DEBIAN_DIR)
    assert folder.is_dir(), f"{folder} is missing: install the real data with `{sources.FASHION_INSTALL}`"
    for rf in sources.REMOTE_FILES["fashion_mnist"]:
        assert sources.sha256_gunzip(folder / Path(rf.path).name) == rf.sha256, rf.path


@pytest.mark.parametrize(
    ("mirror", "match"),
    [("relative/dir", r"sources\.f\.mirror: must be an absolute path"),
     (3, r"sources\.f\.mirror: must be a string, got 3")],
)
def test_fashion_mnist_mirror_param_is_checked(tmp_path: Path, mirror: object, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        sources.download_source("f", {"kind": "fashion_mnist", "mirror": mirror}, tmp_path / "f")
    with pytest.raises(ParamsError, match=r"sources\.f\.folder: unknown key \(allowed: kind, mirror\)"):
        sources.download_source("f", {"kind": "fashion_mnist", "folder": "/x"}, tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_missing_mirror_folder_is_named_with_the_install_command(tmp_path: Path) -> None:
    specs = {"f": {"kind": "fashion_mnist", "mirror": str(tmp_path / "absent")},
             "here": {"kind": "fashion_mnist", "mirror": str(tmp_path)}, "d": {"kind": "sklearn_digits"}}
    assert sources.missing_mirrors(specs) == [
        f"source 'f': mirror folder {tmp_path / 'absent'} does not exist; "
        f"install it with `{sources.FASHION_INSTALL}`"]
