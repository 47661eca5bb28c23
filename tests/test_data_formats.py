"""The format writers produce files the real readers (ours and torchvision's) read back exactly."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pixelzoo.data import formats, sources


def test_idx_roundtrip_and_torchvision_reads_it(tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 7).astype(np.uint8)
    formats.write_idx_gz(tmp_path / "img.gz", x)
    formats.write_idx_gz(tmp_path / "lab.gz", y)
    np.testing.assert_array_equal(formats.read_idx(tmp_path / "img.gz"), x)
    np.testing.assert_array_equal(formats.read_idx(tmp_path / "lab.gz"), y)
    (tmp_path / "img").write_bytes(gzip.decompress((tmp_path / "img.gz").read_bytes()))
    (tmp_path / "lab").write_bytes(gzip.decompress((tmp_path / "lab.gz").read_bytes()))
    np.testing.assert_array_equal(read_image_file(str(tmp_path / "img")).numpy(), x)
    np.testing.assert_array_equal(read_label_file(str(tmp_path / "lab")).numpy(), y)


def test_idx_truncated_is_an_error(tmp_path: Path) -> None:
    formats.write_idx_gz(tmp_path / "img.gz", np.zeros((3, 4, 4), np.uint8))
    data = gzip.decompress((tmp_path / "img.gz").read_bytes())[:-5]
    (tmp_path / "cut").write_bytes(data)
    with pytest.raises(formats.FormatError, match="truncated"):
        formats.read_idx(tmp_path / "cut")


def test_cifar_tar_roundtrip_and_torchvision_reads_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (11, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 11))
    test = (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4))
    path = tmp_path / sources.CIFAR10_FILE
    formats.write_cifar_tar(path, train, test, [f"c{i}" for i in range(10)])
    got = formats.read_cifar_tar(path)
    np.testing.assert_array_equal(got["train"][0], train[0])
    np.testing.assert_array_equal(got["train"][1], train[1])
    np.testing.assert_array_equal(got["test"][0], test[0])
    assert got["label_names"][3] == "c3"
    # torchvision's own CIFAR10 class (md5s of the real batches bypassed) reads the same images, HWC.
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path, filter="data")
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
    tv = CIFAR10(str(tmp_path), train=True, download=False)
    np.testing.assert_array_equal(tv.data, train[0].transpose(0, 2, 3, 1))
    assert tv.targets == list(train[1]) and tv.classes[3] == "c3"


def test_amat_roundtrip_and_bad_values(tmp_path: Path) -> None:
    x = (np.random.default_rng(2).random((5, 28, 28)) > 0.5).astype(np.uint8)
    formats.write_amat(tmp_path / "a.amat", x)
    assert (tmp_path / "a.amat").read_text().count("\n") == 5
    np.testing.assert_array_equal(formats.read_amat(tmp_path / "a.amat"), x)
    (tmp_path / "b.amat").write_text("0 1 2\n")
    with pytest.raises(formats.FormatError, match="'2'"):
        formats.read_amat(tmp_path / "b.amat")
    (tmp_path / "c.amat").write_text("0 1 0\n")
    with pytest.raises(formats.FormatError, match="line 1 has 3 values, expected 784"):
        formats.read_amat(tmp_path / "c.amat")


def test_amat_line_with_a_wrong_count_is_an_error_even_when_the_total_fits(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 2, (2, 784))
    lines = [" ".join(map(str, x[0][:-1])), " ".join(map(str, [*x[1], 1]))]  # 783 + 785 = 2 × 784
    (tmp_path / "d.amat").write_text("\n".join(lines) + "\n")
    with pytest.raises(formats.FormatError, match="line 1 has 783 values, expected 784"):
        formats.read_amat(tmp_path / "d.amat")


def test_torchvision_file_lists_in_sync() -> None:
    from torchvision.datasets import CIFAR10, MNIST

    ours = sources.REMOTE_FILES["torchvision_mnist"]
    assert [rf.path for rf in ours] == [f"MNIST/raw/{name}" for name, _ in MNIST.resources]
    assert all(rf.urls == tuple(m + Path(rf.path).name for m in MNIST.mirrors) for rf in ours)
    (cifar,) = sources.REMOTE_FILES["torchvision_cifar10"]
    assert (cifar.path, cifar.urls) == (CIFAR10.filename, (CIFAR10.url,))
