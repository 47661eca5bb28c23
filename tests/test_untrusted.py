"""Params and files as untrusted input (issue 27): each bad name, duplicate key, out-of-range or colliding
split, escaping path and full disk fails in seconds with its one-line message, writes nothing outside the
repository and leaves no MLflow run; the HTML and Markdown reports escape names as well as values."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_config import CI, EXP, run_stage
from test_training import make_dataset

from pixelzoo import integrity, safety
from pixelzoo.data import datasets
from pixelzoo.data.datasets import load_split, split_digest
from pixelzoo.errors import CorruptFile, ParamsError
from pixelzoo.pipeline import layout
from pixelzoo.pipeline import settings as config

ROOT = Path(__file__).resolve().parents[1]


def _listing(folder: Path) -> set[str]:
    """Everything under ``folder`` (names relative to it): what a case may not have added."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _add_exp(key: str) -> Callable[[dict], None]:
    return lambda p: p["experiments"].update({key: copy.deepcopy(p["experiments"][EXP])})


def _add_dataset(key: str) -> Callable[[dict], None]:
    return lambda p: p["datasets"].update({key: copy.deepcopy(p["datasets"]["digits"])})


def _add_source(key: str) -> Callable[[dict], None]:
    return lambda p: p["sources"].update({key: copy.deepcopy(p["sources"]["digits"])})


def _reference(table: str, row: str) -> Callable[[dict], None]:
    return lambda p: p["experiments"][EXP].update(reference={"table": table, "row": row})


# (id, mutation of ci/params.yaml, experiment on the command line, the problem line expected)
BAD_NAMES: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("path traversal", _add_exp("../../tmp/evil"), "../../tmp/evil",
     "experiments['../../tmp/evil']: '../../tmp/evil' is not a safe name"),
    ("parent folder", _add_exp(".."), EXP, "experiments['..']: '..' is not a safe name"),
    ("markup", _add_exp("<img src=x onerror=alert(1)>"), EXP,
     "experiments['<img src=x onerror=alert(1)>']: '<img src=x onerror=alert(1)>' is not a safe name"),
    ("shell paren", _add_exp("a(b"), "a(b", "experiments['a(b']: 'a(b' is not a safe name"),
    ("space", _add_exp("a b"), "a b", "experiments['a b']: 'a b' is not a safe name"),
    ("quote", _add_exp("a';rm -rf ~;'"), EXP, "is not a safe name"),
    ("dataset traversal", _add_dataset("../../evil"), EXP,
     "datasets['../../evil']: '../../evil' is not a safe name"),
    ("absolute source", _add_source("/tmp/evil"), EXP,
     "sources['/tmp/evil']: '/tmp/evil' is not a safe name"),
    ("report out_dir", lambda p: p["report"].update(out_dir="../../outside"), EXP,
     "report.out_dir: must be a folder inside the project, got '../../outside'"),
    ("reference table", _reference("cifar10_tst", "PixelCNN"), EXP,
     f"experiments.{EXP}.reference.table: unknown reference table 'cifar10_tst' "
     "(did you mean cifar10_test?)"),
    ("reference row", _reference("cifar10_test", "PixelCN"), EXP,
     f"experiments.{EXP}.reference.row: table 'cifar10_test' has no row 'PixelCN' (did you mean PixelCNN?)"),
]


@pytest.mark.parametrize(("mutate", "arg", "line"), [b[1:] for b in BAD_NAMES], ids=[b[0] for b in BAD_NAMES])
def test_bad_names_fail_fast_write_nothing_and_open_no_run(
    mutate: Callable[[dict], None], arg: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = tmp_path / "work" / "repo"  # two levels of our own above it: `../../x` lands in tmp_path
    repo.mkdir(parents=True)
    params = copy.deepcopy(CI)
    mutate(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = _listing(tmp_path)
    code, seconds = run_stage("train.py", [arg], repo, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and seconds < 20.0, (code, seconds, err)
    assert line in err and "Traceback" not in err, err
    assert _listing(tmp_path) == before  # nothing written: no train/, train.lock, scratch/, mlflow.db
    print(f"\n[{seconds:.2f} s] {err.splitlines()[1].strip()}")


def test_every_keyed_section_is_checked_by_one_rule() -> None:
    assert set(config.keyed_sections()) >= {"sources", "datasets", "experiments"}
    assert [str(p) for p in config.validate(CI)] == []
    for good in ("pixelcnn-digits", "row_lstm.v2", "A1"):
        assert safety.name_problem(good) is None
    for bad in ("", ".", "..", "a..b", "-x", "_x", "a/b", "a\\b", "a b", "a$b", "é", "x" * 101, 3):
        assert safety.name_problem(bad), bad


def test_a_params_error_stops_the_stage_before_torch_or_the_tracking_process(tmp_path: Path) -> None:
    """A fresh interpreter, as DVC runs it: the stage exits without importing torch or the tracking client."""
    params = copy.deepcopy(CI)
    params["experiments"][EXP]["epoch"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    script = str(ROOT / "stages/train.py")
    probe = (f"import runpy, sys\nsys.argv = ['train.py', {EXP!r}]\ntry:\n"
             f"    runpy.run_path({script!r}, run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\nprint('RESULT', code, 'torch' in sys.modules, "
             "'pixelzoo.pipeline.tracking.client' in sys.modules, 'mlflow' in sys.modules)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    assert proc.stdout.split()[-4:] == ["1", "False", "False", "False"], proc.stdout + proc.stderr
    assert f"experiments.{EXP}.epoch: unknown key (did you mean epochs?)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # not even scratch/
    print(f"\n[{seconds:.2f} s, fresh interpreter] {proc.stderr.splitlines()[1].strip()}")


# ----------------------------------------------------------------------------- duplicate keys
def _dup_experiment(text: str) -> str:
    return text.replace("experiments:\n", f"experiments:\n  {EXP}:\n    epochs: 1\n", 1)


def _dup_lr(text: str) -> str:
    return text.replace("\n    lr: ", "\n    lr: 0.5\n    lr: ", 1)


def _dup_section(text: str) -> str:
    return text + "tracking:\n  experiment_name: other\n"


DUPLICATES = [
    ("experiment twice", _dup_experiment, f"experiments.{EXP}: duplicate key"),
    ("lr twice", _dup_lr, "train_defaults.optimizer.lr: duplicate key"),
    ("section twice", _dup_section, "tracking: duplicate key"),
]


@pytest.mark.parametrize(("edit", "where"), [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES])
def test_duplicate_keys_name_the_key_path_and_both_lines(
    edit: Callable[[str], str], where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    text = edit(yaml.safe_dump(CI, sort_keys=False))
    (tmp_path / "params.yaml").write_text(text)
    key = where.split(":")[0].rsplit(".", 1)[-1]
    lines = [i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip().startswith(f"{key}:")]
    code, seconds = run_stage("train.py", [EXP], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and seconds < 20.0 and "Traceback" not in err
    found = next(ln for ln in err.splitlines() if where in ln)
    first, second = (int(n) for n in found.split("(lines ")[1].split(")")[0].split(" and "))
    assert first in lines and second in lines and first < second, (found, lines)
    assert config.main(["check", str(tmp_path / "params.yaml")]) == 1  # `config check` no longer says ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    print(f"\n[{seconds:.2f} s] {found.strip()}")


# ----------------------------------------------------------------------------- processed splits
def _rewrite(data: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Replace a split and update meta.json's digest to match: only the value checks can catch it."""
    with open(data / f"{split}.npz", "wb") as f:
        np.savez(f, x=x, y=y)
    meta = json.loads((data / "meta.json").read_text())
    meta["sha256"][split] = split_digest(x, y)
    (data / "meta.json").write_text(json.dumps(meta))


def _level_too_high(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.copy()
    x[0, 0, 0, 0] = 4
    return x, y


def _int64_plus_256(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.int64)
    x[0, 0, 0, 0] += 256
    return x, y


def _nan(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    return x, y


def _label(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = y.copy()
    y[0] = 7
    return x, y


BAD_DATA = [
    ("level >= levels", _level_too_high, "x holds 1 value(s) >= levels=4 (max 4)"),
    ("int64 with +256", _int64_plus_256, "x has dtype int64, expected uint8"),
    ("NaN", _nan, "x holds NaN (dtype float32, expected uint8)"),
    ("label out of range", _label, "y holds labels outside [0, 3) and -1 (min 0, max 7)"),
    ("labels float", lambda x, y: (x, y.astype(np.float64)),
     "y has dtype float64 and shape (50,), expected int64 (50,)"),
]


@pytest.mark.parametrize(("corrupt", "what"), [b[1:] for b in BAD_DATA], ids=[b[0] for b in BAD_DATA])
def test_out_of_range_or_wrong_dtype_split_is_a_data_error_at_load(
    corrupt: Callable, what: str, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data")
    x, y = load_split(data, "train")
    _rewrite(data, "train", *corrupt(x, y))
    start = time.perf_counter()
    with pytest.raises(CorruptFile) as err:
        load_split(data, "train")
    assert str(err.value) == (f"{data / 'train.npz'} is corrupt: {what}; rebuild it with "
                              "`dvc repro -f preprocess@toy`")
    print(f"\n[{time.perf_counter() - start:.3f} s] {err.value}")


def test_split_digest_covers_dtype_and_shape() -> None:
    x = np.arange(24, dtype=np.uint8).reshape(2, 1, 3, 4)
    y = np.array([0, 1], dtype=np.int64)
    wide = x.astype(np.int64)
    wide[0, 0, 0, 0] += 256  # the old digest cast to uint8 first: this collided with the original
    assert datasets._legacy_digest(wide, y) == datasets._legacy_digest(x, y)
    digests = {split_digest(x, y), split_digest(wide, y), split_digest(x.astype(np.int64), y),
               split_digest(x.reshape(2, 1, 4, 3), y), split_digest(x, y.astype(np.int32))}
    assert len(digests) == 5


def test_a_meta_json_of_the_old_digest_asks_for_a_rebuild(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    x, y = load_split(data, "valid")
    meta = json.loads((data / "meta.json").read_text())
    meta["sha256"]["valid"] = datasets._legacy_digest(x, y)
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFile, match=r"written by an older pixelzoo .* `dvc repro -f preprocess@toy`"):
        load_split(data, "valid")


def test_the_train_stage_stops_on_bad_data_before_any_model_or_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(CI, sort_keys=False))
    data = make_dataset(tmp_path / "data" / "processed")
    data = data.rename(data.with_name("digits"))
    x, y = load_split(data, "train")
    _rewrite(data, "train", *_level_too_high(x, y))
    before = _listing(tmp_path)
    code, seconds = run_stage("train.py", [EXP], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and seconds < 30.0 and "Traceback" not in err  # in process; torch was imported
    assert "data/processed/digits/train.npz is corrupt: x holds 1 value(s) >= levels=4" in err
    assert "`dvc repro -f preprocess@digits`" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # no MLflow run
    assert _listing(tmp_path) - before <= {"scratch", "scratch/.params-checked"} | {
        f"scratch/.params-checked/{p.name}" for p in (tmp_path / "scratch" / ".params-checked").glob("*")}
    print(f"\n[{seconds:.2f} s] {err.strip()}")


def test_cifar10_is_unpickled_only_from_the_bytes_that_matched_the_pinned_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelzoo.data import formats, sources

    raw = tmp_path / "raw"
    raw.mkdir()
    train, test = sources.make_cifar10_fixture(10, 5, 8, 0)
    formats.write_cifar_tar(raw / sources.CIFAR10_FILE, train, test, [f"c{i}" for i in range(10)])
    sha = integrity.file_sha256(raw / sources.CIFAR10_FILE)
    # SOURCE.json agrees with the file (as a tampered download folder would): the pinned checksum does not
    (raw / sources.MANIFEST).write_text(json.dumps({"kind": "torchvision_cifar10",
                                                    "files": {sources.CIFAR10_FILE: sha}}))
    monkeypatch.setattr(formats.pickle, "load", lambda *a, **k: pytest.fail("unpickled before the check"))
    with pytest.raises(sources.DataError, match=r"differs from the pinned .*it is not unpickled"):
        sources.load_source("cifar10", {"kind": "torchvision_cifar10"}, raw)


# ----------------------------------------------------------------------------- paths (the second wall)
PATHS = [
    ("outputs", lambda: layout.stage_dir("../../evil", "train")),
    ("scratch", lambda: layout.scratch_dir("..")),
    ("metrics", lambda: layout.metrics_path("../../evil")),
    ("data", lambda: layout.data_dir("../../evil")),
    ("absolute", lambda: layout.scratch_dir("/tmp")),
    ("root itself", lambda: layout.scratch_dir(".")),
]


@pytest.mark.parametrize("build", [p[1] for p in PATHS], ids=[p[0] for p in PATHS])
def test_paths_built_from_names_are_refused_outside_their_root(
    build: Callable[[], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "a" / "repo"
    repo.mkdir(parents=True)
    monkeypatch.chdir(repo)
    before = _listing(tmp_path)
    with pytest.raises(safety.PathEscape, match="nothing was created or deleted|the folder .* itself"):
        build()
    assert _listing(tmp_path) == before
    assert layout.stage_dir(EXP, "train") == Path("outputs") / EXP / "train"  # good names unchanged


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "x").symlink_to(tmp_path.parent)
    with pytest.raises(safety.PathEscape):
        layout.scratch_dir("x")


def test_preprocess_refuses_a_name_that_leaves_data_processed(tmp_path: Path) -> None:
    from pixelzoo.data.preprocess import preprocess

    params = copy.deepcopy(CI)
    params["datasets"]["../../evil"] = params["datasets"]["digits"]
    before = _listing(tmp_path)
    with pytest.raises(safety.PathEscape):
        preprocess("../../evil", params, tmp_path / "data/raw", tmp_path / "data/processed")
    assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------- full disk
def _enospc_after(n: int) -> Callable:
    """A torch.save stand-in that writes ``n`` bytes, then fails as a full disk does."""
    def save(obj: object, fh: object) -> None:
        fh.write(b"\0" * n)  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save


def test_a_full_disk_while_saving_a_checkpoint_names_the_file_and_keeps_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from pixelzoo import checkpoint

    path = tmp_path / "outputs" / "toy" / "train" / "model.pt"
    checkpoint.save_checkpoint({"w": torch.ones(3)}, path)
    good = path.read_bytes()
    monkeypatch.setattr(torch, "save", _enospc_after(1000))
    start = time.perf_counter()
    with pytest.raises(safety.WriteFailed) as err:
        checkpoint.save_checkpoint({"w": torch.zeros(3)}, path)
    msg = str(err.value)
    assert msg.startswith(f"could not write {path}: the disk is full (ENOSPC: No space left on device)")
    assert "the previous model.pt is kept, no temp file left" in msg
    assert path.read_bytes() == good and sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    print(f"\n[{time.perf_counter() - start:.3f} s] {msg}")


@pytest.mark.parametrize("what", ["text", "report pages"])
def test_a_full_disk_while_writing_an_output_or_report_leaves_no_temp(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics" / "toy.json"
    safety.write_text_atomic(target, "old\n")

    def full(self: object, *a: object, **k: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if what == "text":
        def half(fh: object) -> None:
            fh.write(b"half-written")  # type: ignore[attr-defined]
            full(fh)

        with pytest.raises(safety.WriteFailed) as err:
            safety.write_atomic(target, half)
        assert "could not write" in str(err.value) and "the disk is full" in str(err.value)
        assert target.read_text() == "old\n"
        assert sorted(p.name for p in target.parent.iterdir()) == ["toy.json"]
        return
    from test_faults import tiny_params

    from pixelzoo.report import build

    params = tiny_params()
    params["report"]["mlflow"] = False
    monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **k: full(self))
    page = r"(table\.md|index\.html)\.tmp"
    with pytest.raises(safety.WriteFailed, match=rf"could not write .*{page}: the disk is full"):
        build.build_report(tmp_path, params, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tmp"))


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``where``; the reason when this machine does not allow it."""
    where.mkdir()
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else f"mount -t tmpfs failed: {proc.stderr.strip()}"


def test_a_really_full_tmpfs_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    import torch

    from pixelzoo import checkpoint

    disk = tmp_path / "disk"
    reason = _mount_tmpfs(disk, "256k")
    if reason:
        pytest.skip(f"no real full disk here ({reason}); the fault-injected tests above cover it")
    try:
        path = disk / "model.pt"
        checkpoint.save_checkpoint({"w": torch.ones(10)}, path)
        good = path.read_bytes()
        with pytest.raises(safety.WriteFailed, match=rf"could not write {path}: the disk is full \(ENOSPC"):
            checkpoint.save_checkpoint({"w": torch.ones(200_000)}, path)  # 800 kB on a 256 kB filesystem
        assert path.read_bytes() == good and sorted(p.name for p in disk.iterdir()) == ["model.pt"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ----------------------------------------------------------------------------- reports
def test_markdown_escapes_names_in_link_targets_and_text() -> None:
    from pixelzoo.report.figures import Figure
    from pixelzoo.report.render import Cell, Section, Table, to_html, to_markdown

    name = "a b)(x<img src=x onerror=alert(1)>[y](javascript:z)"
    fig = Figure(f"figures/{name}/grid.png", f"{name}: samples")
    table = Table(["experiment"], [[Cell(name, href=f"outputs/{name}/run", fig=fig)]])
    md = to_markdown("t", [], [Section("s", "s", [table])])
    row = next(ln for ln in md.splitlines() if "grid.png" in ln)
    assert "<img" not in row and "&lt;img" in row
    assert "\\[y\\](javascript:z)" in row and not re.search(r"(?<!\\)\[y\]\(", md)  # text, not a link
    targets = re.findall(r"(?<!\\)\]\(([^)]*)\)", row)  # real link targets: after an unescaped ]
    quoted = "a%20b%29%28x%3Cimg%20src=x%20onerror=alert%281%29%3E%5By%5D%28javascript:z%29"
    assert targets == [f"outputs/{quoted}/run", f"figures/{quoted}/grid.png"]
    html = to_html("t", [], [Section("s", "s", [table])])
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_temp_folders_of_a_killed_report_are_git_ignored_and_removed_at_start(tmp_path: Path) -> None:
    from pixelzoo import integrity

    ignored = subprocess.run(["git", "check-ignore", ".reports.tmp-4242", ".reports.old-4242"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == [".reports.tmp-4242", ".reports.old-4242"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".reports.tmp-{dead.pid}"
    stale.mkdir()
    assert integrity.clean_stale_temps(tmp_path / "reports") == [stale] and not stale.exists()


def test_check_name_for_command_line_names() -> None:
    assert safety.check_name(EXP, "experiment") == EXP
    with pytest.raises(ParamsError, match=r"experiment: '\.\./x' is not a safe name.*e\.g\. 'x'"):
        safety.check_name("../x", "experiment")
