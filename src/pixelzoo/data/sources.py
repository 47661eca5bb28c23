"""Raw data sources: fetch or generate the files of one source into ``data/raw/<source>/`` and read them.

A source entry in ``params.yaml`` names a ``kind``:

- ``amat``: Larochelle's fixed binarization of MNIST (Salakhutdinov & Murray 2008), the three ``.amat``
  files the PixelRNN paper's Table 4 is measured on; kept exactly as is.
- ``torchvision_mnist`` / ``torchvision_cifar10``: the files torchvision downloads, from its mirrors, in its
  folder layout (``MNIST/raw/*.gz``; ``cifar-10-python.tar.gz``), so an existing torchvision copy can be
  dropped in. Verified by sha256 (values cross-checked in several public projects and Keras' loader).
- ``fashion_mnist``: Fashion-MNIST (Xiao et al. 2017; 28×28 grey, 10 classes, MNIST's IDX format) from
  torchvision's mirror in its layout (``FashionMNIST/raw/*.gz``), or copied from a local folder given as
  ``mirror:`` (Debian's ``dataset-fashion-mnist`` installs one). Verified by the sha256 of the
  *decompressed* IDX bytes: a re-compressed copy (Debian's) has other ``.gz`` bytes but the same data.
- ``sklearn_digits``: scikit-learn's bundled ``load_digits()`` (1,797 real 8×8 digits, 17 gray levels),
  exported offline to ``digits.npz``.
- ``cifar10_fixture``: a small, deterministic RGB set *in the CIFAR-10 archive format* made from the digits
  (colourised, bilinearly upscaled), so offline profiles and tests exercise the real CIFAR-10 reader.
- ``amat_fixture`` / ``idx_fixture``: the same idea for binarized MNIST (three ``.amat`` files, 28×28, no
  labels) and for torchvision's gzipped IDX layout (``<folder>/raw/{train,t10k}-*-ubyte.gz``, 28×28 gray,
  labels), made from upscaled digits: the offline rehearsal of the paper profile reads them with the real
  readers (:mod:`pixelzoo.pipeline.profiles.rehearsal`).

Every file is written to a temporary name and renamed into place; ``SOURCE.json`` (file -> sha256) is
written last and marks the source complete (it also holds the content sha256 of
files verified by content). A file that fails its checksum is moved aside, never deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from pixelzoo.data import formats
from pixelzoo.errors import UserError, kill_point
from pixelzoo.integrity import file_sha256
from pixelzoo.safety import make_atomic

MANIFEST = "SOURCE.json"
TIMEOUT_S = 10.0  # per socket operation: an unreachable host fails in seconds, not minutes


class DataError(UserError, RuntimeError):
    """Raw data is missing, unreachable or corrupt; the message says which file and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to data/raw/<source>/
    urls: tuple[str, ...]  # http(s) URLs, or paths of files in a local mirror folder
    sha256: str
    gunzip: bool = False  # sha256 is of the decompressed content (any compression of the data is fine)

    def digest(self, path: Path) -> str:
        """The hash this file is verified by: of its bytes, or of its decompressed content."""
        return sha256_gunzip(path) if self.gunzip else file_sha256(path, cached=False)

    @property
    def what(self) -> str:
        return "sha256 of the decompressed content" if self.gunzip else "sha256"


_AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"
_AMAT_SHA = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
# Same mirrors, names and order as torchvision.datasets.MNIST (a test keeps them in sync).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_SHA = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Fashion-MNIST: torchvision.datasets.FashionMNIST's mirror and names (a test keeps them in sync). sha256 of
# the decompressed files, computed from Debian's copy, whose md5s match REFERENCE.md (and torchvision's .gz).
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_DIR = "FashionMNIST/raw"
_FASHION_CONTENT_SHA = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_INSTALL = "sudo apt-get install dataset-fashion-mnist"  # Debian's copy, for `mirror:`
FASHION_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_SHA = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_FILE = "cifar-10-python.tar.gz"
DIGITS_FILE = "digits.npz"
# sha256 of load_digits() images (uint8) then targets (int64): catches a change of scikit-learn's copy.
_DIGITS_SHA = "65e5b4619795efb40c1082f4c350c049e4ad552200d369b6ae99e21eef5e72c5"

REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "amat": tuple(
        RemoteFile(f"binarized_mnist_{s}.amat", (_AMAT_URL.format(s),), _AMAT_SHA[s]) for s in _AMAT_SHA
    ),
    "torchvision_mnist": tuple(
        RemoteFile(f"MNIST/raw/{name}", tuple(m + name for m in MNIST_MIRRORS), sha)
        for name, sha in _MNIST_SHA.items()
    ),
    "torchvision_cifar10": (RemoteFile(CIFAR10_FILE, (CIFAR10_URL,), _CIFAR10_SHA),),
    "fashion_mnist": tuple(
        RemoteFile(f"{FASHION_DIR}/{name}", tuple(m + name for m in FASHION_MIRRORS), sha, gunzip=True)
        for name, sha in _FASHION_CONTENT_SHA.items()
    ),
}


def remote_files(spec: dict[str, Any]) -> tuple[RemoteFile, ...]:
    """The files of a downloaded kind; with ``mirror:`` their one 'URL' is the file in that folder."""
    files = REMOTE_FILES[spec["kind"]]
    if "mirror" not in spec:
        return files
    return tuple(replace(rf, urls=(str(Path(spec["mirror"]) / Path(rf.path).name),)) for rf in files)


def _absolute(path: str) -> str:
    if not Path(path).is_absolute():  # stages also run in copies of the project
        raise ValueError(f"must be an absolute path, e.g. {FASHION_DEBIAN_DIR}")
    return path


def _folder_name(name: str) -> str:
    if not name.isidentifier():
        raise ValueError("must be a plain folder name like MNIST")
    return name


# Types with checks, for the params of a kind (pydantic annotations; see pixelzoo.pipeline.settings)
PosInt = Annotated[int, Field(ge=1)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
FolderName = Annotated[str, AfterValidator(_folder_name)]


@dataclass(frozen=True)
class Kind:
    """What a source kind provides: native gray levels, channels, classes, and its params.

    ``params`` / ``optional``: the entry's keys besides ``kind``, name -> type (pydantic annotations, so
    constraints such as ``Annotated[int, Field(ge=5)]`` work); the params schema (pixelzoo.pipeline.settings) is
    built from them, so a new kind is this one entry plus its reader.
    """

    levels: int
    channels: int
    n_classes: int | None
    splits: tuple[str, ...]  # splits the source ships with
    params: dict[str, Any] = field(default_factory=dict)  # required params besides `kind`
    optional: dict[str, Any] = field(default_factory=dict)  # params that may be left out (default null)


KINDS: dict[str, Kind] = {
    "amat": Kind(2, 1, None, ("train", "valid", "test")),
    "torchvision_mnist": Kind(256, 1, 10, ("train", "test")),
    "torchvision_cifar10": Kind(256, 3, 10, ("train", "test")),
    "fashion_mnist": Kind(256, 1, 10, ("train", "test"), optional={"mirror": AbsolutePath}),
    "sklearn_digits": Kind(17, 1, 10, ("train",)),
    # five training batches, so n_train >= 5; size 8..64 (real CIFAR-10 is 32)
    "cifar10_fixture": Kind(256, 3, 10, ("train", "test"), {
        "n_train": Annotated[int, Field(ge=len(formats.CIFAR_TRAIN_BATCHES))],
        "n_test": PosInt, "size": Annotated[int, Field(ge=8, le=64)], "seed": int}),
    "amat_fixture": Kind(2, 1, None, ("train", "valid", "test"),
                         {"n_train": PosInt, "n_valid": PosInt, "n_test": PosInt, "seed": int}),
    "idx_fixture": Kind(256, 1, 10, ("train", "test"),
                        {"folder": FolderName, "n_train": PosInt, "n_test": PosInt, "seed": int}),
}
# torchvision's raw IDX file names per split (MNIST and its drop-in relatives such as Fashion-MNIST).
IDX_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
MNIST_SIDE = 28  # binarized MNIST and the IDX sources are 28×28; the .amat reader assumes it


def source_kind(name: str, spec: dict[str, Any]) -> Kind:
    """Validate a source entry against its kind's schema (raises ParamsError) and return its Kind."""
    from pixelzoo.pipeline.settings import check_source

    check_source(name, spec)
    return KINDS[spec["kind"]]


def missing_mirrors(source_specs: dict[str, dict[str, Any]]) -> list[str]:
    """One line per source whose local ``mirror:`` folder is absent, naming the command that installs it.

    Profiles and tests call this before any work, so missing real data fails at once and says what to do.
    """
    lines = []
    for name, spec in source_specs.items():
        mirror = spec.get("mirror") if isinstance(spec, dict) else None
        if mirror and not Path(mirror).is_dir():
            how = f"`{FASHION_INSTALL}`" if spec.get("kind") == "fashion_mnist" else "place the files there"
            lines.append(f"source {name!r}: mirror folder {mirror} does not exist; install it with {how}")
    return lines


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a TCP connection (a quick offline test, no download)."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def unobtainable_mirrors(source_specs: dict[str, dict[str, Any]],
                         reachable: Callable[[str], bool] | None = None) -> tuple[list[str], list[str]]:
    """(notes, problems) for sources whose ``mirror:`` folder is absent: a note where ``download`` will
    fetch the files from torchvision's mirror instead (its host answers), else the message with both ways
    out. A profile (``make quick``) checks this before any work; the tests use :func:`missing_mirrors`."""
    reachable = reachable or _reachable
    notes, problems = [], []
    for name, spec in source_specs.items():
        mirror = spec.get("mirror") if isinstance(spec, dict) else None
        if not mirror or Path(mirror).is_dir():
            continue
        kind = spec.get("kind")
        urls = REMOTE_FILES[kind][0].urls if kind in REMOTE_FILES else ()
        if urls and reachable(urls[0]):
            notes.append(f"source {name!r}: mirror folder {mirror} does not exist; download@{name} fetches "
                         f"the files from {urls[0].rsplit('/', 1)[0]}/ instead")
        else:
            problems.append(f"source {name!r}: mirror folder {mirror} does not exist and "
                            f"{'no mirror answers' if urls else 'it cannot be downloaded'}. "
                            + _both_ways(mirror, kind))
    return notes, problems


def _both_ways(mirror: str, kind: str) -> str:
    """The two ways to obtain a mirrored source when its folder is missing and the download failed."""
    install = f"`{FASHION_INSTALL}`" if kind == "fashion_mnist" else "a copy of the files"
    return (f"Two ways out: install Debian's copy with {install} (it fills {mirror}), or connect to the "
            "internet and rerun (the files then come from torchvision's mirror, checked by sha256).")


def sha256_gunzip(path: Path) -> str:
    """sha256 of a gzip file's decompressed bytes; a file that is not valid gzip gets a readable marker."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        return f"(not a readable gzip file: {err})"
    return h.hexdigest()


def _quarantine(path: Path, raw_dir: Path) -> Path:
    """Move a bad file to ``data/raw/<source>.corrupt/<same relative path>`` (outside the DVC output)."""
    dest = raw_dir.with_name(raw_dir.name + ".corrupt") / path.relative_to(raw_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while dest.exists():  # keep earlier bad copies too
        n += 1
        dest = dest.with_name(f"{path.name}.{n}")
    os.replace(path, dest)
    return dest


def _copy_local(src: str, dest: Path) -> None:
    """The `get` of a local mirror folder: copy the file (FileNotFoundError when it is not there)."""
    shutil.copyfile(src, dest)


def _http_get(url: str, dest: Path, timeout: float = TIMEOUT_S) -> None:
    """Stream ``url`` to ``dest``; every socket operation times out after ``timeout`` seconds."""
    req = urllib.request.Request(url, headers={"User-Agent": "pixelzoo-data/0.1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)


def _fetch_remote(name: str, raw_dir: Path, files: tuple[RemoteFile, ...],
                  get: Callable[[str, Path], None], hint: str | None = None) -> None:
    problems: list[str] = []
    missing: list[RemoteFile] = []
    offline = False
    for rf in files:
        path = raw_dir / rf.path
        if path.exists():
            actual = rf.digest(path)
            if actual == rf.sha256:
                print(f"[download@{name}] {path}: present, {rf.what} ok (not fetched again)", flush=True)
                continue
            moved = _quarantine(path, raw_dir)
            problems.append(f"{path}: {rf.what} mismatch, expected {rf.sha256}, actual {actual}; "
                            f"moved aside to {moved}")
        if offline:
            missing.append(rf)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        connect_failures = 0
        for url in rf.urls:
            print(f"[download@{name}] fetching {url}", flush=True)
            try:
                get(url, part)
            except urllib.error.HTTPError as err:  # the server answered: try the next mirror
                problems.append(f"{url}: HTTP {err.code} {err.reason}")
                continue
            except FileNotFoundError:  # a local mirror folder without this file
                problems.append(f"{url}: no such file")
                continue
            except OSError as err:  # URLError (DNS, refused), socket timeout: try the next mirror
                problems.append(f"{url}: cannot connect ({getattr(err, 'reason', err)})")
                connect_failures += 1
                continue
            actual = rf.digest(part)
            if actual == rf.sha256:
                os.replace(part, path)
                break
            moved = _quarantine(part, raw_dir)
            problems.append(f"{url}: downloaded file has {rf.what} {actual}, expected {rf.sha256}; "
                            f"moved aside to {moved}")
        part.unlink(missing_ok=True)
        # No mirror reachable: do not spend a timeout per remaining file, just list them for the user.
        offline = connect_failures == len(rf.urls)
        if not path.exists():
            missing.append(rf)
    if missing:
        lines = [f"source {name!r}: {len(missing)} file(s) could not be obtained.", *problems,
                 "To place the files by hand, download each from the URL shown and put it at the exact path:"]
        lines += [f"  {rf.urls[0]}\n    -> {(raw_dir / rf.path).resolve()}  ({rf.what} {rf.sha256})"
                  for rf in missing]
        lines.append(f"then rerun `dvc repro download@{name}` (files already present are checked, not refetched).")
        if hint:
            lines.append(hint)
        raise DataError("\n".join(lines))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)
    y = d.target.astype(np.int64)
    h = hashlib.sha256(x.tobytes())
    h.update(y.tobytes())
    if h.hexdigest() != _DIGITS_SHA or not np.array_equal(x, d.images):
        raise DataError(f"scikit-learn's load_digits() returned data with sha256 {h.hexdigest()}, "
                        f"expected {_DIGITS_SHA}: this scikit-learn ships a different digits set")
    return x, y


def _bilinear(n_in: int, n_out: int) -> np.ndarray:
    """n_out×n_in bilinear interpolation matrix (half-pixel centres, edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


def make_cifar10_fixture(n_train: int, n_test: int, size: int, seed: int
                         ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Colourised scikit-learn digits, N×3×size×size uint8 with 256 levels, the digit as label.

    Each image gets a random background colour and a foreground colour that differs from it by 0.35-0.65
    in every channel (so the digit stays visible); intensity is the digit's gray value, upscaled
    bilinearly. Images are drawn from a seeded permutation of the 1,797 digits (repeated, with new
    colours, when more are asked for); train and test use distinct digits while n_train + n_test <= 1797.
    """
    digits, labels = _digits()
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    reps = -(-n // len(digits))
    idx = np.concatenate([rng.permutation(len(digits)) for _ in range(reps)])[:n]
    up = _bilinear(8, size)
    t = np.einsum("ij,njk,lk->nil", up, digits[idx] / 16.0, up)  # N×size×size intensity in [0, 1]
    bg = rng.uniform(0, 1, (n, 3))
    fg = (bg + 0.5 + rng.uniform(-0.15, 0.15, (n, 3))) % 1.0
    img = bg[:, :, None, None] + (fg - bg)[:, :, None, None] * t[:, None]
    x = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    y = labels[idx]
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez(f, **arrays)


def make_mnist_fixture(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n scikit-learn digits upscaled to 28×28 gray uint8 (MNIST's shape and 256 levels), with labels."""
    digits, labels = _digits()
    idx = np.random.default_rng(seed).permutation(len(digits))[:n]
    up = _bilinear(8, MNIST_SIDE)
    t = np.einsum("ij,njk,lk->nil", up, digits[idx] / 16.0, up)
    return np.clip(np.rint(t * 255), 0, 255).astype(np.uint8), labels[idx]


def _idx_name(folder: str, split: str, what: str) -> str:
    return f"{folder}/raw/{IDX_SPLIT_PREFIX[split]}-{what}-ubyte.gz"


def _generate_fixture(kind: str, spec: dict[str, Any], raw_dir: Path) -> list[str]:
    """Offline stand-ins in the real file format of binarized MNIST (.amat) or torchvision MNIST (IDX)."""
    split_sizes = {s: spec[f"n_{s}"] for s in KINDS[kind].splits}
    x, y = make_mnist_fixture(sum(split_sizes.values()), spec["seed"])
    written, start = [], 0
    for split, n in split_sizes.items():
        xs, ys = x[start:start + n], y[start:start + n]
        start += n
        if kind == "amat_fixture":  # fixed binarization at half intensity, like a thresholded digit
            rel = f"binarized_mnist_{split}.amat"
            make_atomic(raw_dir / rel, lambda p, xs=xs: formats.write_amat(p, (xs >= 128).astype(np.uint8)))
            written.append(rel)
            continue
        for what, arr in (("images-idx3", xs), ("labels-idx1", ys.astype(np.uint8))):
            rel = _idx_name(spec["folder"], split, what)
            make_atomic(raw_dir / rel, lambda p, arr=arr: formats.write_idx_gz(p, arr))
            written.append(rel)
    return written


def _generate(kind: str, spec: dict[str, Any], raw_dir: Path) -> list[str]:
    if kind == "sklearn_digits":
        x, y = _digits()
        make_atomic(raw_dir / DIGITS_FILE, lambda p: _savez(p, images=x, target=y))
        return [DIGITS_FILE]
    if kind in ("amat_fixture", "idx_fixture"):
        return _generate_fixture(kind, spec, raw_dir)
    train, test = make_cifar10_fixture(spec["n_train"], spec["n_test"], spec["size"], spec["seed"])
    names = [str(i) for i in range(10)]
    make_atomic(raw_dir / CIFAR10_FILE, lambda p: formats.write_cifar_tar(p, train, test, names))
    return [CIFAR10_FILE]


def download_source(name: str, spec: dict[str, Any], raw_dir: str | Path,
                    get: Callable[[str, Path], None] | None = None) -> dict[str, Any]:
    """Fetch (or generate) source ``name`` into ``raw_dir`` and write its ``SOURCE.json``; return it.

    Files already present with the right sha256 are kept; a mismatching file is moved to
    ``<raw_dir>.corrupt/`` and fetched again. Raises DataError naming URLs and exact paths when offline.
    """
    source_kind(name, spec)
    kind = spec["kind"]
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / MANIFEST).unlink(missing_ok=True)  # the manifest marks completeness: gone until done
    contents = {}
    if kind in REMOTE_FILES:
        files = remote_files(spec)
        hint = None
        if "mirror" in spec and not Path(spec["mirror"]).is_dir() and get is None:
            # No local copy (no root, macOS, ...): torchvision's mirror instead; offline, both ways out.
            files, get, hint = REMOTE_FILES[kind], _http_get, _both_ways(spec["mirror"], kind)
            print(f"[download@{name}] mirror folder {spec['mirror']} does not exist; downloading from "
                  f"{files[0].urls[0].rsplit('/', 1)[0]}/ instead", flush=True)
        elif "mirror" in spec:
            get = get or _copy_local
            hint = (f"The mirror folder {spec['mirror']} should hold the files named above"
                    + (f"; Debian's copy: `{FASHION_INSTALL}`." if kind == "fashion_mnist" else "."))
        _fetch_remote(name, raw_dir, files, get or _http_get, hint)
        rel = [rf.path for rf in files]
        contents = {rf.path: rf.sha256 for rf in files if rf.gunzip}  # verified just now
    else:
        rel = _generate(kind, spec, raw_dir)
    kill_point("download")  # crash tests: the files are there, the manifest that marks completeness not yet
    manifest = {"source": name, "kind": kind, "params": spec,
                "files": {r: file_sha256(raw_dir / r, cached=False) for r in rel}}
    if contents:
        manifest["contents_sha256"] = contents
    make_atomic(raw_dir / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
    print(f"[download@{name}] complete: {', '.join(rel)}", flush=True)
    return manifest


@dataclass
class RawSource:
    """A source's arrays in native form: x N×C×H×W uint8 with values in [0, levels), y int64."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    levels: int
    n_classes: int | None
    files: dict[str, str]  # relative path -> sha256, verified against SOURCE.json


def _read_idx_splits(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST's four IDX files (also Fashion-MNIST's): train and test images N×1×28×28, labels int64."""
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = formats.read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")[:, None]
        y = formats.read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        splits[split] = (x, y)
    return splits


def _verified_bytes(name: str, raw_dir: Path, rel: str, spec: dict[str, Any], manifest: dict[str, Any]
                    ) -> bytes:
    """The bytes of ``raw_dir/rel``, read once and hashed: refused unless their sha256 is the pinned one
    (:data:`REMOTE_FILES`; a generated fixture's is in ``SOURCE.json``). A file that is unpickled must be
    these very bytes, never a second read that could differ from what was checked."""
    path = raw_dir / rel
    blob = path.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    pinned = {rf.path: rf.sha256 for rf in REMOTE_FILES.get(spec["kind"], ()) if not rf.gunzip}
    expected = pinned.get(rel) or manifest["files"].get(rel)
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual} differs from the pinned {expected}; it is not unpickled. "
                        f"Run `dvc repro download@{name}` (or place the original file there by hand)")
    return blob


def load_source(name: str, spec: dict[str, Any], raw_dir: str | Path) -> RawSource:
    """Read a downloaded source after checking every file against its ``SOURCE.json``."""
    info = source_kind(name, spec)
    raw_dir = Path(raw_dir)
    manifest_path = raw_dir / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"source {name!r} is not (completely) downloaded: {manifest_path} is missing; "
                        f"run `dvc repro download@{name}`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("kind") != spec["kind"]:
        raise DataError(f"{raw_dir} holds kind {manifest.get('kind')!r}, params say {spec['kind']!r}; "
                        f"run `dvc repro download@{name}`")
    for rel, expected in manifest["files"].items():
        actual = file_sha256(raw_dir / rel, cached=False) if (raw_dir / rel).is_file() else "(missing)"
        if actual != expected:
            raise DataError(f"{raw_dir / rel}: sha256 {actual} differs from {expected} recorded in "
                            f"{manifest_path}; run `dvc repro download@{name}`")
    kind = spec["kind"]
    if kind in ("amat", "amat_fixture"):
        splits = {}
        for s in ("train", "valid", "test"):
            x = formats.read_amat(raw_dir / f"binarized_mnist_{s}.amat")[:, None]
            splits[s] = (x, np.full(len(x), -1, dtype=np.int64))
    elif kind in ("torchvision_mnist", "fashion_mnist", "idx_fixture"):
        folder = {"torchvision_mnist": "MNIST/raw", "fashion_mnist": FASHION_DIR}.get(kind)
        splits = _read_idx_splits(raw_dir / (folder or f"{spec['folder']}/raw"))
    elif kind in ("torchvision_cifar10", "cifar10_fixture"):
        data = formats.read_cifar_tar(raw_dir / CIFAR10_FILE, _verified_bytes(name, raw_dir, CIFAR10_FILE,
                                                                              spec, manifest))
        splits = {"train": data["train"], "test": data["test"]}
    else:  # sklearn_digits: one pool, split by the dataset entry
        with np.load(raw_dir / DIGITS_FILE) as z:
            splits = {"train": (z["images"][:, None].astype(np.uint8), z["target"].astype(np.int64))}
    for s, (x, y) in splits.items():
        if x.ndim != 4 or x.shape[1] != info.channels or len(x) != len(y) or x.max(initial=0) >= info.levels:
            raise DataError(f"source {name!r} split {s}: unexpected arrays {x.shape} / {y.shape} "
                            f"(max value {x.max(initial=0)}, {info.levels} levels expected)")
    return RawSource(splits, info.levels, info.n_classes, dict(manifest["files"]))
