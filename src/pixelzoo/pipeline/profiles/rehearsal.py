"""The rehearsal profile: the default (paper) ``params.yaml`` made small and offline, by code.

``derive(params)`` keeps what defines the paper table — every experiment key, its model, dataset, model
kind and switches (``conditional``, ``eval_split``, residual/skip, depth, ``reference``) — and changes only
what makes it expensive or online:

- every source becomes an offline fixture *in that source's real file format* (``amat_fixture`` for the
  fixed binarized MNIST, ``idx_fixture`` in torchvision's gzipped-IDX layout for MNIST-like sources,
  ``cifar10_fixture`` for the CIFAR-10 python-batch archive) holding a few dozen images, so the real
  readers, preprocessing and label handling run;
- widths (hidden, head_hidden, features, cond_channels) shrink, depth stays (Table 3 varies it);
- training is one epoch capped at ``MAX_STEPS`` optimizer steps, sampling draws a handful of images.

Because it is derived, the rehearsal follows every change of the paper profile: ``make test`` runs it
(``tests/test_rehearsal.py``), so each default experiment's download, preprocess, train, evaluate, sample
and report stage runs on every push. Its numbers are meaningless and its report says so.

    python -m pixelzoo.profile rehearsal      # run it in .work/rehearsal/
    python -m pixelzoo.pipeline.profiles.rehearsal              # print the derived params
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from pixelzoo.data.sources import REMOTE_FILES

MAX_STEPS = 2
IMAGES = {"train": 40, "valid": 8, "test": 8}  # per fixture source (valid carved from train where needed)
CIFAR_SIZE = 8  # fixture side; the sampler's cost grows with C·H·W forwards, the format does not change
# Width-like model args and their rehearsal ceiling (divisible by 3: RGB models split maps into R,G,B),
# and PixelSNAIL's depth and key size (its paper rows would run 91M parameters otherwise).
WIDTHS = {"hidden": 6, "head_hidden": 12, "features": 6, "cond_channels": 3, "filters": 6,
          "attn_blocks": 1, "key_size": 6}
PROFILE = {
    "name": "rehearsal",
    "description": "Offline rehearsal of the paper profile: every default experiment and stage, on a few "
                   "dozen fixture images with tiny models and two training steps. The numbers are "
                   "meaningless; they only show that every stage runs.",
    "paper_numbers": False,
}


class NoFixture(ValueError):
    """A source kind of the paper profile has no offline fixture yet: the rehearsal cannot cover it."""


def _idx_folder(kind: str) -> str | None:
    """The torchvision folder (``MNIST``, ``FashionMNIST``...) of a source whose files are gzipped IDX."""
    paths = [rf.path for rf in REMOTE_FILES.get(kind, ())]
    if paths and all(p.endswith("-ubyte.gz") and p.count("/") == 2 for p in paths):
        return paths[0].split("/")[0]
    return None


def fixture_source(name: str, spec: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The offline stand-in for source ``name``: same file format, a few dozen images."""
    kind = spec.get("kind")
    sizes = {"n_train": IMAGES["train"], "n_test": IMAGES["test"], "seed": seed}
    if kind == "amat":
        return {"kind": "amat_fixture", "n_valid": IMAGES["valid"], **sizes}
    if kind == "torchvision_cifar10":
        return {"kind": "cifar10_fixture", "size": CIFAR_SIZE, **sizes}
    folder = _idx_folder(str(kind))
    if folder is not None:
        return {"kind": "idx_fixture", "folder": folder, **sizes}
    if kind == "sklearn_digits" or str(kind).endswith("_fixture"):
        return dict(spec)  # offline already; its datasets are capped below
    raise NoFixture(f"source {name!r} (kind {kind!r}) has no offline fixture: add one to "
                    f"pixelzoo.pipeline.profiles.rehearsal.fixture_source so the rehearsal covers it")


def small_dataset(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Same source, levels and seed; split sizes that fit the fixtures."""
    out = dict(entry)
    caps = {"valid_size": IMAGES["valid"], "test_size": IMAGES["test"], "n_test": IMAGES["test"]}
    for key, n in caps.items():
        if out.get(key) is not None:
            out[key] = min(int(out[key]), n)
    out["n_train"] = min(int(out.get("n_train") or IMAGES["train"]), IMAGES["train"])  # offline pools are big
    return out


def small_experiment(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Same model, dataset and switches; narrow layers, one epoch of at most MAX_STEPS steps."""
    out = copy.deepcopy(dict(entry))
    args = out.get("model_args") or {}
    out["model_args"] = {k: min(v, WIDTHS[k]) if k in WIDTHS and isinstance(v, int) else v
                         for k, v in args.items()}
    if "epochs" in out:
        out["epochs"] = 1
    if "max_steps" in out:
        out["max_steps"] = MAX_STEPS
    return out


def derive(params: Mapping[str, Any]) -> dict[str, Any]:
    """The rehearsal params from the default params: same sections and keys, offline and tiny."""
    out = copy.deepcopy(dict(params))
    sources = params.get("sources") or {}
    out["sources"] = {name: fixture_source(name, spec, seed=i)
                      for i, (name, spec) in enumerate(sources.items())}
    out["datasets"] = {name: small_dataset(e) for name, e in (params.get("datasets") or {}).items()}
    out["experiments"] = {key: small_experiment(e) for key, e in (params.get("experiments") or {}).items()}
    out["train_defaults"] = {**(params.get("train_defaults") or {}), "device": "cpu", "precision": "fp32",
                             "epochs": 1, "max_steps": MAX_STEPS, "log_every_steps": 1}
    out["evaluate"] = {**(params.get("evaluate") or {}), "device": "cpu"}
    out["sample"] = {**(params.get("sample") or {}), "device": "cpu", "n_grid": 4, "per_row": 2,
                     "n_completions": 2}
    out["tracking"] = {**(params.get("tracking") or {}), "experiment_name": "pixelzoo-rehearsal"}
    out["profile"] = dict(PROFILE)
    return out


DERIVED = "pixelzoo.pipeline.profiles.rehearsal.derive from params.yaml: edit params.yaml"


def dump(params: Mapping[str, Any], origin: str = DERIVED) -> str:
    """YAML text of a derived params file, headed by a note that it is generated (and from what)."""
    return f"# Generated by {origin}.\n" + yaml.safe_dump(dict(params), sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    from pixelzoo.pipeline.settings import load_params

    path = (argv or sys.argv[1:] or ["params.yaml"])[0]
    sys.stdout.write(dump(derive(load_params(path))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
