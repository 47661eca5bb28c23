"""``params.yaml``: loading, the one schema of the whole file, and resolving an experiment.

Every knob of the pipeline lives in the params file; this module is the only place that knows its shape.
Training, tracking, lineage and the report import it (never each other) to read params.

- :func:`load_checked` reads a params file and validates **all** of it before any work, reporting every
  problem at once as ``<path>: <what is wrong> (<hint>)``, e.g.
  ``experiments.pixelcnn-cifar10.optimizer.lr: must be > 0, got -0.1``. Unknown keys are errors.
- The schema is pydantic models below, one per section; a source kind's params come from
  :data:`pixelzoo.data.sources.KINDS` and a model's ``model_args`` from its builder's signature
  (:func:`pixelzoo.models.registry.model_arguments`), so neither needs an edit here.
- :func:`resolve_experiment` merges ``train_defaults`` under an experiment entry; :func:`config_digest`
  identifies the result.

    python -m pixelzoo.config check [params.yaml]
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import inspect
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from pixelzoo import commands, safety
from pixelzoo.errors import ParamsError, UserError
from pixelzoo.integrity import config_digest
from pixelzoo.optimizers import OPTIMIZERS

__all__ = ["ParamsError", "UserError", "load_params", "load_checked", "validate", "resolve_experiment",
           "stage_config", "config_digest", "deep_merge", "section_entry", "check_source", "dataset_problems",
           "Dataset", "OPTIMIZERS", "precheck", "schema_problems"]

# Optimizer names in params -> torch.optim classes; their other keyword arguments are allowed in params.
# Keys a resolved experiment (train_defaults merged under the entry) must have.
REQUIRED_KEYS = ("model", "dataset", "batch_size", "epochs", "seed", "optimizer")
# The params section (besides the experiment) that each stage reads; logged with the stage's run.
STAGE_SECTIONS = {"train": None, "evaluate": "evaluate", "sample": "sample"}

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Device = Literal["auto", "cpu", "cuda"]


# ----------------------------------------------------------------------------- the schema
class Section(BaseModel):
    """A params mapping: unknown keys are errors; values are never coerced ("10" is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


class Profile(Section):
    """Which profile a params file is (shown as the report's banner)."""

    name: str
    description: str
    paper_numbers: bool
    # Train every experiment once per seed (pixelzoo.pipeline.profiles.replicates): the report and its
    # table give each row's mean and spread. None: one run per experiment, at its own seed.
    seeds: Annotated[list[NonNegInt], Field(min_length=2)] | None = None


class Dataset(Section):
    """``datasets.<name>``: one ``preprocess@<name>`` stage (see pixelzoo.data.preprocess)."""

    source: str
    levels: int = Field(ge=2, le=256)
    seed: int
    valid_size: PosInt | None = None
    test_size: PosInt | None = None
    n_train: PosInt | None = None
    n_test: PosInt | None = None


def inherited(**constraints: Any) -> Any:
    """A field with no default that an entry may leave unset (it inherits ``train_defaults``'): absent
    reads as None, while an explicit ``null`` is still rejected (pydantic does not validate defaults)."""
    return Field(default=None, **constraints)


class Optimizer(BaseModel):
    """``name`` plus the torch optimizer's own keyword arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())
    name: Literal["rmsprop", "adam", "sgd"] = inherited()
    lr: float = inherited(gt=0)


class TrainSettings(Section):
    """Knobs of ``train_defaults``, which every experiment entry may override.

    The defaults here are the only ones: :func:`resolve_experiment` fills every knob a params file leaves
    unset from them, so the loop and the stages read a complete config and state no fallback of their
    own. ``inherited()`` knobs have no default (every params file sets them, in ``train_defaults`` or
    the entry).
    """

    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False  # torch.compile the training forward (issue 24.2)
    optimizer: Optimizer = inherited()
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    # The PixelCNN++ recipe (pixelzoo.recipe), null = off: EMA (Polyak) weights for validation and the
    # stage output, and the learning rate times this factor after every optimizer step.
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | None = None
    lr_decay_per_step: Annotated[float, Field(gt=0, le=1)] | None = None
    batch_size: PosInt = inherited()
    eval_batch_size: PosInt | None = None  # None: batch_size
    epochs: PosInt = inherited()
    max_steps: PosInt | None = None
    seed: NonNegInt = inherited()
    conditional: bool = False
    eval_split: Literal["valid", "test"] = "test"
    checkpoint_minutes: Annotated[float, Field(ge=0)] = 10.0
    log_every_steps: PosInt = 100
    # `python` (one process) or a launcher command, e.g. `torchrun --standalone --nproc_per_node=2`
    launcher: str | list[str] = "python"


class Reference(Section):
    table: str
    row: str


class Experiment(TrainSettings):
    """``experiments.<key>``: one paper-table row; ``model_args`` are checked against the model's builder."""

    model: str
    dataset: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    reference: Reference | None = None
    # Written by the profile's seed expansion: this entry re-runs experiment <replicate_of> at another seed.
    replicate_of: str | None = None


# Every knob's value when a params file leaves it unset (the schema's defaults, the only ones).
TRAIN_DEFAULTS: dict[str, Any] = {
    name: field.default for name, field in TrainSettings.model_fields.items() if name not in REQUIRED_KEYS
}  # (inherited() knobs are REQUIRED_KEYS: a resolved experiment has them or fails)


class Evaluate(Section):
    batch_size: PosInt
    device: Device = "auto"


class Sample(Section):
    seed: int
    device: Device = "auto"
    method: Literal["cached", "naive"] = "cached"
    n_grid: PosInt
    per_row: PosInt
    n_completions: NonNegInt
    soft_label_pairs: list[Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list
    )


class Tracking(Section):
    experiment_name: str = Field(min_length=1)


class ReceptiveField(Section):
    models: list[str] | None = None  # None: every registered model
    channels: Literal[1, 3] = 1
    levels: int = Field(default=2, ge=2, le=256)
    size: int = Field(default=9, ge=3)


class Report(Section):
    out_dir: str = "reports"
    mlflow: bool = True
    mlflow_ui: str = "http://127.0.0.1:5000"  # base URL of an MLflow UI for run links of a local store
    # The paper tables shown even when no experiment reproduces them (folded); ids: pixelzoo.report.reference
    tables: list[str] = Field(default_factory=lambda: [
        "pixelrnn_t4_bmnist", "cifar10_test", "pixelrnn_t2_residual_skip", "pixelrnn_t3_depth"])
    receptive_field: ReceptiveField | None = None


class Regression(Section):
    tolerance_bits_per_dim: float = Field(gt=0)


class Params(Section):
    """The whole params file. ``sources`` entries are checked per kind (:func:`check_source`)."""

    profile: Profile | None = None
    sources: dict[str, dict[str, Any]]
    datasets: dict[str, Dataset]
    train_defaults: TrainSettings
    experiments: dict[str, Experiment]
    evaluate: Evaluate
    sample: Sample
    tracking: Tracking
    report: Report | None = None
    regression: Regression | None = None


# ----------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """One thing wrong in a params file: where (dotted path), what, and what to do."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.hint})" if self.hint else "")


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


def _model_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for listing its allowed keys)."""
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:  # else a dict key or list index inside the current field: stay
            inner = _inner_model(field.annotation)
            if inner is None:
                return None
            cls = inner
    return cls


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X``, ``X | None`` or ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _looks_like_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _explain(err: Mapping[str, Any], root: type[BaseModel] | None) -> tuple[str, str]:
    """(message, hint) in the pipeline's words for one pydantic error."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = f"got {value!r}"
    if kind == "missing":
        return "missing", "required here"
    if kind == "extra_forbidden":
        model = _model_at(root, tuple(err["loc"])) if root else None
        allowed = sorted(model.model_fields) if model else []
        hint = _did_you_mean(err["loc"][-1], allowed) or (f"allowed: {', '.join(allowed)}" if allowed else "")
        return "unknown key", hint
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, {got}", ""
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, {got}", _did_you_mean(value, _literal_words(ctx))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, {got}", ""
    if kind in ("float_type", "float_parsing"):
        hint = "YAML reads 1e-3 as text: write 1.0e-3" if _looks_like_number(value) else ""
        return f"must be a number, {got}", hint
    if kind == "bool_type":
        return f"must be true or false, {got}", ""
    if kind == "string_type":
        return f"must be a string, {got}", ""
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, {got}", ""
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, {got}", ""
    if kind == "value_error":  # a check of our own (e.g. a source's path must be absolute)
        return f"{ctx.get('error', err['msg'])}, {got}", ""
    if kind in ("too_short", "too_long"):
        return f"{err['msg'].lower()}, {got}", ""
    return f"{err['msg']}, {got}", ""


def _literal_words(ctx: Mapping[str, Any]) -> list[str]:
    return [w.strip(" '\"") for w in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]


def _problems(err: ValidationError, prefix: tuple[Any, ...], root: type[BaseModel]) -> list[Problem]:
    out = []
    for e in err.errors():
        message, hint = _explain(e, root)
        out.append(Problem(_path(prefix + tuple(e["loc"])), message, hint))
    return out


def _validate(cls: type[BaseModel], data: Any, prefix: tuple[Any, ...]) -> list[Problem]:
    try:
        cls.model_validate(data)
    except ValidationError as err:
        return _problems(err, prefix, cls)
    return []


# ----------------------------------------------------------------------------- sources
@cache
def _source_model(kind: str) -> type[BaseModel]:
    """The schema of a source entry of ``kind``, built from its ``Kind`` (pixelzoo.data.sources.KINDS)."""
    from pixelzoo.data.sources import KINDS

    info = KINDS[kind]
    fields: dict[str, Any] = {"kind": (Literal[kind], ...)}
    fields.update({k: (t, ...) for k, t in info.params.items()})
    fields.update({k: (Union[t, None], None) for k, t in info.optional.items()})  # noqa: UP007
    return create_model(f"Source_{kind}", __base__=Section, **fields)


def _source_problems(name: str, spec: Any) -> list[Problem]:
    from pixelzoo.data.sources import KINDS

    path = ("sources", name)
    if not isinstance(spec, dict):
        return [Problem(_path(path), f"must be a mapping with a `kind:`, got {spec!r}")]
    kind = spec.get("kind")
    if kind not in KINDS:
        hint = _did_you_mean(kind, KINDS) or f"known kinds: {', '.join(sorted(KINDS))}"
        return [Problem(_path(path + ("kind",)), f"unknown source kind {kind!r}", hint)]
    return _validate(_source_model(kind), spec, path)


def check_source(name: str, spec: Any) -> None:
    """Validate one source entry; raises ParamsError listing its problems."""
    problems = _source_problems(name, spec)
    if problems:
        raise ParamsError("\n".join(str(p) for p in problems))


# ----------------------------------------------------------------------------- cross-checks
def dataset_problems(name: str, entry: Any, sources: Mapping[str, Any]) -> list[Problem]:
    """A dataset entry's own problems, then against its source (exists, has the levels and splits)."""
    shape = _validate(Dataset, entry, ("datasets", name))
    return shape + (_dataset_source_problems(name, entry, sources) if isinstance(entry, dict) else [])


def _dataset_source_problems(name: str, entry: Mapping[str, Any], sources: Mapping[str, Any]
                             ) -> list[Problem]:
    from pixelzoo.data.sources import KINDS

    at = f"datasets.{name}"
    src = entry.get("source")
    if src not in sources:
        return [Problem(f"{at}.source", f"unknown source {src!r}",
                        _did_you_mean(src, sources) or f"sources: {', '.join(sorted(sources)) or '(none)'}")]
    kind = KINDS.get((sources[src] or {}).get("kind")) if isinstance(sources[src], dict) else None
    if kind is None:
        return []  # reported under sources
    out = []
    if isinstance(entry.get("levels"), int) and entry["levels"] > kind.levels:
        out.append(Problem(f"{at}.levels", f"source {src!r} has {kind.levels} levels, got {entry['levels']}",
                           f"use levels <= {kind.levels}"))
    if "valid" not in kind.splits and entry.get("valid_size") is None:
        out.append(Problem(f"{at}.valid_size", f"source {src!r} has no validation split",
                           "set valid_size: images carved from train"))
    if "test" in kind.splits and entry.get("test_size") is not None:
        out.append(Problem(f"{at}.test_size", f"source {src!r} has its own test split",
                           "remove test_size (n_test caps it)"))
    if "test" not in kind.splits and entry.get("test_size") is None:
        out.append(Problem(f"{at}.test_size", f"source {src!r} has no test split",
                           "set test_size: images carved from the source's pool"))
    return out


def _model_args_problems(at: str, model: str, args: Mapping[str, Any]) -> list[Problem]:
    """``model_args`` against the builder's signature: known names, values of the annotated types."""
    from pixelzoo.models.registry import model_arguments

    accepted = model_arguments(model, args)
    out = []
    for key, value in args.items():
        if key not in accepted:
            hint = _did_you_mean(key, accepted) or f"{model} takes: {', '.join(accepted)}"
            out.append(Problem(f"{at}.model_args.{key}", f"unknown argument of {model}", hint))
            continue
        try:
            _adapter(accepted[key].annotation).validate_python(value, strict=True)
        except ValidationError as err:
            out += _problems(err, (*at.split("."), "model_args", key), None)
        except Exception:  # noqa: BLE001 - an annotation pydantic cannot check: the builder will
            pass
    return out


@cache
def _adapter_cached(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _adapter(annotation: Any) -> TypeAdapter:
    try:
        return _adapter_cached(annotation)
    except TypeError:  # unhashable annotation
        return TypeAdapter(annotation)


def _optimizer_problems(at: str, opt: Mapping[str, Any], inherited: Mapping[str, Any]) -> list[Problem]:
    """Optimizer keys other than ``name`` must be arguments of that torch optimizer."""
    name = opt.get("name")
    if name not in OPTIMIZERS:
        return [Problem(f"{at}.optimizer.name", "missing", "set it here or in train_defaults.optimizer")]
    import torch

    accepted = set(inspect.signature(getattr(torch.optim, OPTIMIZERS[name])).parameters) - {"params"}
    out = []
    for key in sorted(set(opt) - {"name"} - accepted):
        where = " (inherited from train_defaults.optimizer)" if key in inherited else ""
        hint = _did_you_mean(key, accepted) or f"{name} takes: {', '.join(sorted(accepted))}"
        what = f"not an argument of torch.optim.{OPTIMIZERS[name]}{where}"
        out.append(Problem(f"{at}.optimizer.{key}", what, hint))
    return out


def _experiment_problems(key: str, params: Mapping[str, Any]) -> list[Problem]:
    """What only the merged experiment (or other sections) can tell: references, required keys, types."""
    from pixelzoo.models.registry import registered

    at = f"experiments.{key}"
    defaults = params.get("train_defaults") or {}
    cfg = deep_merge(defaults, params["experiments"][key])
    out = [Problem(f"{at}.{k}", "missing", "set it here or in train_defaults") for k in REQUIRED_KEYS
           if cfg.get(k) is None]
    models = registered()
    if cfg.get("model") not in models:
        out.append(Problem(f"{at}.model", f"unknown model {cfg.get('model')!r}",
                           _did_you_mean(cfg.get("model"), models) or f"registered: {', '.join(models)}"))
    elif isinstance(cfg.get("model_args"), dict):
        out += _model_args_problems(at, cfg["model"], cfg["model_args"])
    datasets = params.get("datasets") or {}
    if cfg.get("dataset") not in datasets:
        out.append(Problem(f"{at}.dataset", f"unknown dataset {cfg.get('dataset')!r}",
                           _did_you_mean(cfg.get("dataset"), datasets) or f"datasets: {', '.join(datasets)}"))
    elif cfg.get("conditional") and _dataset_classes(params, cfg["dataset"]) is None:
        out.append(Problem(f"{at}.conditional", f"dataset {cfg['dataset']!r} has no class labels",
                           "set conditional: false, or use a labelled dataset"))
    if isinstance(cfg.get("optimizer"), dict):
        out += _optimizer_problems(at, cfg["optimizer"], defaults.get("optimizer") or {})
    base = cfg.get("replicate_of")
    if isinstance(base, str) and (base == key or base not in params["experiments"]):
        out.append(Problem(f"{at}.replicate_of", f"{base!r} is not another experiment of this file",
                           _did_you_mean(base, params["experiments"]) or "name the experiment it re-runs"))
    return out


def _dataset_classes(params: Mapping[str, Any], dataset: str) -> int | None:
    from pixelzoo.data.sources import KINDS

    src = (params["datasets"][dataset] or {}).get("source")
    spec = (params.get("sources") or {}).get(src) or {}
    kind = KINDS.get(spec.get("kind")) if isinstance(spec, dict) else None
    return kind.n_classes if kind else 0  # 0: unknown here, reported elsewhere


def _report_problems(params: Mapping[str, Any]) -> list[Problem]:
    from pixelzoo.models.registry import registered

    rf = (params.get("report") or {}).get("receptive_field") or {}
    models = registered()
    return [Problem(f"report.receptive_field.models[{i}]", f"unknown model {m!r}",
                    _did_you_mean(m, models) or f"registered: {', '.join(models)}")
            for i, m in enumerate(rf.get("models") or []) if m not in models]


# ----------------------------------------------------------------------------- untrusted input
def keyed_sections() -> tuple[str, ...]:
    """Sections of the params file that map names to entries (``dict[str, ...]`` in :class:`Params`):
    their keys become paths, stage names and labels. A new keyed section is covered without an edit."""
    return tuple(name for name, field in Params.model_fields.items()
                 if getattr(field.annotation, "__origin__", None) is dict)


def name_problems(params: Mapping[str, Any]) -> list[Problem]:
    """Every key of a keyed section that is not a safe name (pixelzoo.safety.NAME_PATTERN)."""
    out = []
    for section in keyed_sections():
        entries = params.get(section)
        for name in entries if isinstance(entries, dict) else ():
            problem = safety.name_problem(name)
            if problem:
                out.append(Problem(f"{section}[{name!r}]", problem, safety.name_hint(name)))
    return out


def _out_dir_problems(params: Mapping[str, Any]) -> list[Problem]:
    """``report.out_dir`` must be a folder inside the project (it is replaced wholesale by the report)."""
    out_dir = (params.get("report") or {}).get("out_dir") if isinstance(params.get("report"), dict) else None
    if not isinstance(out_dir, str):
        return []  # absent (default reports/) or a type error reported by the schema
    rel = Path(out_dir)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] in (".", ".git", ".dvc"):
        return [Problem("report.out_dir", f"must be a folder inside the project, got {out_dir!r}",
                        "a relative path without '..', e.g. reports")]
    bad = [part for part in rel.parts if safety.name_problem(part)]
    if bad:
        return [Problem("report.out_dir", f"{bad[0]!r} is not a safe folder name", safety.name_hint(bad[0]))]
    return []


def untrusted_problems(params: Mapping[str, Any]) -> list[Problem]:
    """The checks of :mod:`pixelzoo.safety` that the schema makes: names and the report folder."""
    return name_problems(params) + _out_dir_problems(params)


def _reference_problems(params: Mapping[str, Any]) -> list[Problem]:
    """``experiments.<key>.reference`` and ``report.tables`` against pixelzoo.report.reference's tables."""
    from pixelzoo.report.reference import TABLES

    tables = {t.id: t for t in TABLES}
    out = []
    experiments = params.get("experiments") if isinstance(params.get("experiments"), dict) else {}
    for key, entry in experiments.items():
        ref = entry.get("reference") if isinstance(entry, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("table"), str):
            continue  # null, or a shape error reported by the schema
        at = f"experiments.{key}.reference"
        table = tables.get(ref["table"])
        if table is None:
            out.append(Problem(f"{at}.table", f"unknown reference table {ref['table']!r}",
                               _did_you_mean(ref["table"], tables) or f"tables: {', '.join(tables)}"))
        elif isinstance(ref.get("row"), str) and ref["row"] not in {r.label for r in table.rows}:
            labels = [r.label for r in table.rows]
            out.append(Problem(f"{at}.row", f"table {table.id!r} has no row {ref['row']!r}",
                               _did_you_mean(ref["row"], labels) or f"rows: {', '.join(labels)}"))
    report = params.get("report") if isinstance(params.get("report"), dict) else {}
    for i, tid in enumerate(report.get("tables") or [] if isinstance(report.get("tables"), list) else []):
        if isinstance(tid, str) and tid not in tables:
            out.append(Problem(f"report.tables[{i}]", f"unknown reference table {tid!r}",
                               _did_you_mean(tid, tables) or f"tables: {', '.join(tables)}"))
    return out


def _duplicate_problems(err: safety.DuplicateKeys) -> list[Problem]:
    return [Problem(path, f"duplicate key (lines {first} and {second})",
                    "YAML would keep only the last one: remove or rename one of them")
            for path, first, second in err.found]


def schema_problems(params: Any) -> list[Problem]:
    """The problems found without torch or the model registry: the shape of every section, safe names,
    sources and datasets. Stages check these first, before they start the tracking process or import
    torch (a typo fails in well under a second); :func:`validate` adds what needs the registry."""
    if not isinstance(params, dict):
        return validate(params)
    problems = _validate(Params, params, ()) + untrusted_problems(params) + _reference_problems(params)
    sources = params.get("sources") if isinstance(params.get("sources"), dict) else {}
    for name, spec in sources.items():
        problems += _source_problems(name, spec)
    datasets = params.get("datasets") if isinstance(params.get("datasets"), dict) else {}
    for name, entry in datasets.items():
        if isinstance(entry, dict):
            problems += _dataset_source_problems(name, entry, sources)
    return sorted(dict.fromkeys(problems), key=lambda p: p.path)


def precheck(path: str | Path = "params.yaml", section: str | None = None, name: str | None = None
             ) -> dict[str, Any]:
    """The torch-free part of :func:`load_checked`, for a stage's first line: read ``path`` (duplicate
    keys are errors), check :func:`schema_problems` and that ``params[section][name]`` exists. A params
    text that already passed the full check (its stamp exists) is not checked again."""
    text, params = _read_params(path)
    if not checked_stamp(text).exists():
        problems = schema_problems(params)
        if problems:
            raise ParamsError(format_problems(problems, str(path)))
    if section is not None and name is not None:
        section_entry(params, section, name)
    return params


# ----------------------------------------------------------------------------- validation
def validate(params: Any) -> list[Problem]:
    """Every problem of a params mapping (empty list: valid): :func:`schema_problems`, then what needs
    the model registry (experiments' models and arguments, the report's receptive-field models)."""
    if not isinstance(params, dict):
        return [Problem("(top level)", f"must be a mapping of sections, got {type(params).__name__}")]
    problems = schema_problems(params)
    experiments = params.get("experiments")
    if isinstance(experiments, dict) and isinstance(params.get("train_defaults") or {}, dict):
        for key, entry in experiments.items():
            if isinstance(entry, dict):
                problems += _experiment_problems(key, params)
    if isinstance(params.get("report"), dict) and isinstance(params["report"].get("receptive_field"), dict):
        problems += _report_problems(params)
    unique = list(dict.fromkeys(problems))  # a merged check may repeat a shape error
    return sorted(unique, key=lambda p: p.path)


def format_problems(problems: list[Problem], source: str) -> str:
    n = len(problems)
    lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"] + [f"  {p}" for p in problems]
    lines.append(f"Nothing was run. Fix {source} and rerun (`python -m pixelzoo.config check {source}` "
                 "checks it alone).")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read a params file (YAML mapping at top level) and return it as a plain dict, unvalidated."""
    return _read_params(path)[1]


def _read_params(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(text, params) of a params file: the text is what a validation stamp is computed from."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found; run from the project root (where dvc.yaml is)")
    text = path.read_text()
    try:  # libyaml's parser when PyYAML has it, refusing keys written twice (pixelzoo.safety)
        data = safety.load_yaml(text)
    except safety.DuplicateKeys as err:
        raise ParamsError(format_problems(_duplicate_problems(err), str(path))) from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ParamsError(f"params file {path} must hold a mapping at top level, got {type(data).__name__}")
    return text, data


def load_checked(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file; raises ParamsError listing every problem. Call before any work.

    A params text that passed is remembered by a stamp (:func:`checked_stamp`), so the next stages skip
    the checks: they need the model registry, i.e. torch, which download and preprocess otherwise never
    import (~1-2 s each). Problems are never remembered: bad params are reported by every stage.
    """
    text, params = _read_params(path)
    stamp = checked_stamp(text)
    if stamp.exists():
        return params
    problems = validate(params)
    if problems:
        raise ParamsError(format_problems(problems, str(path)))
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:  # a read-only checkout validates every time
        pass
    return params


# Stamps of params texts that passed validate() (relative to the project root, like scratch_dir).
CHECKED_DIR = Path("scratch") / ".params-checked"


def checked_stamp(text: str) -> Path:
    """Stamp file of a params text, named by a sha256 over everything :func:`validate` depends on: the
    text, this package's sources (schema, source kinds, model builders' signatures) and the versions of
    Python, pydantic and torch (optimizer signatures). Any change there is a new stamp, checked afresh."""
    import importlib.util

    import pydantic
    import pydantic_core

    from pixelzoo.integrity import code_sha256

    package = Path(__file__).resolve().parents[1]  # the whole pixelzoo package
    spec = importlib.util.find_spec("torch")  # located, not imported (that is the point)
    torch_version = Path(spec.origin).with_name("version.py")  # torch.version: version and git commit
    versions = [sys.version, pydantic.VERSION, pydantic_core.__version__, torch_version.read_text()]
    h = hashlib.sha256(text.encode())
    h.update(code_sha256([package.name], package.parent).encode())
    h.update("\0".join(versions).encode())
    return CHECKED_DIR / h.hexdigest()


# ----------------------------------------------------------------------------- resolution
def section_entry(params: Mapping[str, Any], section: str, name: str) -> dict[str, Any]:
    """``params[section][name]`` as a dict, or a ParamsError naming the entries that exist."""
    entries = params.get(section)
    if not isinstance(entries, dict):
        raise ParamsError(f"params has no `{section}:` section")
    if name not in entries:
        what = section[:-1] if section.endswith("s") else section
        hint = _did_you_mean(name, entries)
        raise ParamsError(f"unknown {what} {name!r}{' (' + hint + ')' if hint else ''}; "
                          f"params `{section}:` defines: {', '.join(sorted(entries)) or '(none)'}")
    entry = entries[name]
    if not isinstance(entry, dict):
        raise ParamsError(f"params `{section}.{name}` must be a mapping, got {type(entry).__name__}")
    return entry


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base``; nested dicts merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_experiment(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The experiment ``key`` of ``params.yaml`` with ``train_defaults`` merged under it."""
    entry = section_entry(params, "experiments", key)
    cfg = deep_merge(deep_merge(TRAIN_DEFAULTS, params.get("train_defaults") or {}), entry)
    if cfg["eval_batch_size"] is None:
        cfg["eval_batch_size"] = cfg.get("batch_size")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ParamsError("\n".join(f"experiments.{key}.{k}: missing (set it here or in train_defaults)"
                                    for k in missing))
    cfg["name"] = key
    return cfg


def stage_config(params: Mapping[str, Any], key: str, stage: str) -> dict[str, Any]:
    """What stage ``stage`` of experiment ``key`` runs with: the resolved experiment + its own section."""
    cfg = resolve_experiment(params, key)
    section = STAGE_SECTIONS[stage]
    if section is not None:
        schema = Params.model_fields[section].annotation
        cfg[section] = deep_merge(defaults_of(schema), params.get(section) or {})
    return cfg


def report_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``report`` section with the schema's defaults filled in."""
    return deep_merge(defaults_of(Report), params.get("report") or {})


def defaults_of(schema: type[BaseModel]) -> dict[str, Any]:
    """The schema's defaults of a section (what an unset optional key means)."""
    return {n: f.get_default(call_default_factory=True) for n, f in schema.model_fields.items()
            if not f.is_required()}


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelzoo.config", description="Check a params file.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.check_arguments(sub.add_parser("check", help="validate a params file; list every problem"))
    args = parser.parse_args(argv)
    try:  # load_params + validate, not load_checked: an explicit check never trusts (or writes) a stamp
        params = load_params(args.params)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 1
    problems = validate(params)
    if problems:
        print(format_problems(problems, args.params), file=sys.stderr)
        return 1
    counts = ", ".join(f"{len(params.get(s) or {})} {s}" for s in ("sources", "datasets", "experiments"))
    print(f"{args.params}: ok ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
