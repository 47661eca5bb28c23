"""Readers and writers for the raw file formats the sources ship in.

One module for both directions so that the tests and the offline ``cifar10_fixture`` source write exactly
what the real loaders read:

- IDX (LeCun's MNIST format), gzip-compressed as distributed: big-endian header ``0x00 0x00 <dtype> <ndim>``
  then ``ndim`` int32 sizes, then the raw bytes. Only ``ubyte`` (0x08) is used by MNIST.
- CIFAR-10 "python version": a ``.tar.gz`` holding ``cifar-10-batches-py/{data_batch_1..5,test_batch,
  batches.meta}``, each a pickled dict with ``data`` (N×3072 uint8: the R plane, G plane, B plane, each
  row-major) and ``labels`` (list of int).
- ``.amat`` (Larochelle's binarized MNIST): text, one image per line, 784 values 0/1 separated by spaces.

Writers are deterministic (fixed gzip/tar mtimes, no file name in the gzip header) so generated fixtures have stable checksums.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_UBYTE = 0x08
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


class FormatError(ValueError):
    """A raw file does not have the structure its format requires."""


# --- IDX (MNIST) -------------------------------------------------------------------------------------------

def write_idx_gz(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file (the form MNIST is distributed in)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, IDX_UBYTE, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(header + array.tobytes())


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed if the name ends in .gz) into a uint8 array."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise FormatError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = data[2], data[3]
    if dtype != IDX_UBYTE:
        raise FormatError(f"{path}: IDX element type {dtype:#x} is not ubyte (0x08)")
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise FormatError(f"{path}: IDX header says shape {shape} but holds {body.size} values (truncated?)")
    return body.reshape(shape).copy()


# --- CIFAR-10 python batches ---------------------------------------------------------------------------------

def _cifar_batch(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.uint8)
    entry = {
        "batch_label": label,
        "labels": [int(v) for v in y],
        "data": x.reshape(len(x), -1),  # N×C×H×W -> N×(C·H·W): R plane, G plane, B plane, row-major
        "filenames": [f"{label.replace(' ', '_')}_{i:05d}.png" for i in range(len(x))],
    }
    return pickle.dumps(entry, protocol=2)


def write_cifar_tar(
    path: str | Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    label_names: list[str],
) -> None:
    """Write a CIFAR-10 style ``cifar-10-python.tar.gz``: train split over 5 batches, one test batch.

    ``x`` arrays are N×3×H×W uint8 (the real file has H = W = 32), ``y`` integer labels.
    """
    tx, ty = train
    parts = np.array_split(np.arange(len(tx)), len(CIFAR_TRAIN_BATCHES))
    members = {
        name: _cifar_batch(tx[idx], np.asarray(ty)[idx], f"training batch {i + 1} of 5")
        for i, (name, idx) in enumerate(zip(CIFAR_TRAIN_BATCHES, parts, strict=True))
    }
    members[CIFAR_TEST_BATCH] = _cifar_batch(test[0], test[1], "testing batch 1 of 1")
    side = int(tx.shape[-1])
    meta = {"num_cases_per_batch": int(len(parts[0])), "label_names": list(label_names),
            "num_vis": 3 * side * side}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            for name, payload in members.items():
                info = tarfile.TarInfo(f"{CIFAR_DIR}/{name}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                tar.addfile(info, io.BytesIO(payload))


def _load_pickle(tar: tarfile.TarFile, name: str, path: Path) -> dict:
    try:
        member = tar.extractfile(f"{CIFAR_DIR}/{name}")
    except KeyError:
        raise FormatError(f"{path}: member {CIFAR_DIR}/{name} missing (not a CIFAR-10 python archive?)") from None
    if member is None:
        raise FormatError(f"{path}: member {CIFAR_DIR}/{name} is not a regular file")
    # latin1 reads the Python 2 pickles of the original archive (str keys), as torchvision does.
    return pickle.load(member, encoding="latin1")


def _cifar_arrays(entry: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(entry["data"], dtype=np.uint8)
    side = int(round((data.shape[1] / 3) ** 0.5)) if data.ndim == 2 else 0
    if data.ndim != 2 or 3 * side * side != data.shape[1]:
        raise FormatError(f"{where}: data rows of {data.shape[1:]} values are not 3 square colour planes")
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if len(labels) != len(data):
        raise FormatError(f"{where}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, side, side), labels


def read_cifar_tar(path: str | Path, data: bytes | None = None
                   ) -> dict[str, tuple[np.ndarray, np.ndarray] | list[str]]:
    """Read a CIFAR-10 python archive without extracting it.

    Returns ``{"train": (x, y), "test": (x, y), "label_names": [...]}`` with x N×3×H×W uint8, y int64.
    The archive must already be checksum-verified: it is unpickled. Pass its verified bytes as ``data``
    so that what is unpickled is exactly what was hashed (``path`` then only names it in messages).
    """
    path = Path(path)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") if data is not None else tarfile.open(
            path, mode="r:gz")
    except (tarfile.TarError, OSError) as err:
        raise FormatError(f"{path}: not a readable .tar.gz ({err})") from err
    with tar:
        train = [_cifar_arrays(_load_pickle(tar, n, path), f"{path}:{n}") for n in CIFAR_TRAIN_BATCHES]
        test = _cifar_arrays(_load_pickle(tar, CIFAR_TEST_BATCH, path), f"{path}:{CIFAR_TEST_BATCH}")
        meta = _load_pickle(tar, "batches.meta", path)
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    return {"train": (x, y), "test": test, "label_names": list(meta["label_names"])}


# --- .amat (binarized MNIST) --------------------------------------------------------------------------------

def write_amat(path: str | Path, x: np.ndarray) -> None:
    """Write binary images (N×28×28 or N×784, values 0/1) as ``.amat`` text lines."""
    flat = np.asarray(x).reshape(len(x), -1)
    if not np.isin(flat, (0, 1)).all():
        raise ValueError("amat images must be binary (0/1)")
    Path(path).write_text("".join(" ".join(map(str, row)) + "\n" for row in flat.astype(int)))


def read_amat(path: str | Path, side: int = 28) -> np.ndarray:
    """Read a binarized-MNIST ``.amat`` file into an N×side×side uint8 array of 0/1."""
    path = Path(path)
    raw = path.read_bytes()
    n = sum(1 for line in raw.splitlines() if line.strip())
    chars = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (chars == ord("0")) | (chars == ord("1"))
    is_space = np.isin(chars, np.frombuffer(b" \t\r\n", dtype=np.uint8))
    if not (is_digit | is_space).all():
        bad = chars[~(is_digit | is_space)][0]
        raise FormatError(f"{path}: unexpected character {chr(bad)!r}; .amat values must be 0 or 1")
    # Values are single characters, so every digit character is one pixel (fast on 50,000 lines).
    is_newline = chars == ord("\n")
    line_of = np.cumsum(is_newline) - is_newline  # 0-based line number of every character
    per_line = np.bincount(line_of[is_digit], minlength=int(line_of[-1]) + 1 if chars.size else 0)
    bad = np.flatnonzero((per_line != 0) & (per_line != side * side))  # blank lines are skipped
    if bad.size:
        raise FormatError(f"{path}: line {bad[0] + 1} has {per_line[bad[0]]} values, expected {side * side} "
                          f"({bad.size} such line(s)); the file is damaged: download it again")
    values = chars[is_digit] - ord("0")
    return values.reshape(n, side, side).astype(np.uint8)
