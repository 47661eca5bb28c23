"""Quantisation, deterministic splits, params validation before any work, atomic outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelzoo.data import load_meta, load_split, preprocess, split_digest
from pixelzoo.data.sources import RawSource
from pixelzoo.pipeline.settings import ParamsError

SOURCES = {"bm": {"kind": "amat"}, "mn": {"kind": "torchvision_mnist"}, "dg": {"kind": "sklearn_digits"}}


def _params(**entry) -> dict:
    return {"sources": SOURCES, "datasets": {"d": entry}}


def test_quantize_properties() -> None:
    v = np.arange(256, dtype=np.uint8)
    for levels in (2, 3, 4, 16, 255, 256):
        q = preprocess.quantize(v, levels, 256)
        assert q.dtype == np.uint8 and q.min() == 0 and q.max() == levels - 1
        assert (np.diff(q.astype(int)) >= 0).all()  # monotonic
        np.testing.assert_array_equal(q, np.floor(v.astype(float) * levels / 256))
        counts = np.bincount(q, minlength=levels)
        assert counts.max() - counts.min() <= 1  # equal-width bins over 0..255
    np.testing.assert_array_equal(preprocess.quantize(v, 256, 256), v)
    assert list(preprocess.quantize(np.array([0, 127, 128, 255]), 2, 256)) == [0, 0, 1, 1]
    d = np.arange(17)
    np.testing.assert_array_equal(preprocess.quantize(d, 4, 17), np.floor(d * 4 / 17))
    b = np.array([0, 1, 1, 0], np.uint8)
    np.testing.assert_array_equal(preprocess.quantize(b, 2, 2), b)  # binarized MNIST kept as is
    with pytest.raises(ValueError):
        preprocess.quantize(v, 300, 256)


def _entry(**kw) -> dict:
    return {"source": "dg", "levels": 17, "seed": 0, "valid_size": 10, "test_size": 20,
            "n_train": None, "n_test": None, **kw}


def test_split_determinism_and_disjointness() -> None:
    counts = {"train": 100}
    a, origin = preprocess.split_indices(counts, _entry())
    b, _ = preprocess.split_indices(counts, _entry())
    c, _ = preprocess.split_indices(counts, _entry(seed=1))
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["valid"], c["valid"])
    assert origin == {"train": "train", "valid": "train", "test": "train"}
    allidx = np.concatenate(list(a.values()))
    assert len(allidx) == 100 and len(np.unique(allidx)) == 100
    capped, _ = preprocess.split_indices(counts, _entry(n_train=5))
    assert len(capped["train"]) == 5 and np.array_equal(capped["valid"], a["valid"])
    assert set(capped["train"]) <= set(a["train"])


def test_binarized_kept_as_is() -> None:
    rng = np.random.default_rng(0)
    splits = {s: ((rng.random((n, 1, 4, 4)) > 0.5).astype(np.uint8), np.full(n, -1, np.int64))
              for s, n in (("train", 8), ("valid", 3), ("test", 5))}
    raw = RawSource(splits, 2, None, {"f": "0" * 64})
    entry = {"source": "bm", "levels": 2, "seed": 0, "valid_size": None, "test_size": None,
             "n_train": None, "n_test": None}
    out, meta = preprocess.build_dataset("bm", entry, raw)
    for s in splits:
        np.testing.assert_array_equal(out[s][0], splits[s][0])  # same images, same order
        assert out[s][1].dtype == np.int64 and (out[s][1] == -1).all()
    assert meta["n_classes"] is None and meta["valid_carved_from_train"] is False
    assert meta["counts"] == {"train": 8, "valid": 3, "test": 5}
    assert meta["sha256"]["test"] == split_digest(*splits["test"])


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"source": "mn", "levels": 1, "seed": 0, "valid_size": 5}, r"datasets\.d\.levels: must be >= 2"),
        ({"source": "mn", "levels": 257, "seed": 0, "valid_size": 5}, r"datasets\.d\.levels: must be <= 256"),
        ({"source": "dg", "levels": 32, "seed": 0, "valid_size": 5, "test_size": 5},
         r"datasets\.d\.levels: source 'dg' has 17 levels"),
        ({"source": "bm", "levels": 4, "seed": 0}, "source 'bm' has 2 levels"),
        ({"source": "nosuch", "levels": 2, "seed": 0}, r"datasets\.d\.source: unknown source 'nosuch'"),
        ({"source": "mn", "levels": 4, "seed": 0}, r"datasets\.d\.valid_size: source 'mn' has no valid"),
        ({"source": "mn", "levels": 4, "seed": 0, "valid_size": 5, "test_size": 3}, "remove test_size"),
        ({"source": "dg", "levels": 4, "seed": 0, "valid_size": 5}, "set test_size"),
        ({"source": "mn", "levels": 4, "seed": 0, "valid_size": 5, "valid_szie": 3},
         r"datasets\.d\.valid_szie: unknown key \(did you mean valid_size\?\)"),
        ({"source": "mn", "levels": 4, "seed": "0", "valid_size": 5}, r"datasets\.d\.seed: must be an int"),
    ],
)
def test_bad_dataset_params_fail_before_any_work(tmp_path: Path, entry: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        preprocess.preprocess("d", _params(**entry), tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="unknown dataset 'mnist9'.*defines: d"):
        preprocess.preprocess("mnist9", _params(source="mn", levels=2, seed=0), tmp_path, tmp_path)


def test_digits_end_to_end_and_interrupted_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelzoo.data import sources

    sources.download_source("dg", SOURCES["dg"], tmp_path / "raw" / "dg")
    params = _params(source="dg", levels=4, seed=3, valid_size=100, test_size=300, n_train=500)
    meta = preprocess.preprocess("d", params, tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out" / "d"
    assert meta == load_meta(out) and meta["counts"] == {"train": 500, "valid": 100, "test": 300}
    assert meta["test_carved_from_train"] and meta["source_levels"] == 17
    x, y = load_split(out, "train")
    assert x.dtype == np.uint8 and x.shape == (500, 1, 8, 8) and set(np.unique(x)) == {0, 1, 2, 3}
    assert y.dtype == np.int64 and meta["sha256"]["train"] == split_digest(x, y)

    # A crash while writing leaves the previous complete output untouched and no temp folder behind.
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(preprocess.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        preprocess.preprocess("d", {**params, "datasets": {"d": {**params["datasets"]["d"], "seed": 4}}},
                              tmp_path / "raw", tmp_path / "out")
    assert load_meta(out) == meta
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d"]
