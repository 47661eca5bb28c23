"""MLflow models, the registry and system metrics for the stages: what the train/evaluate stages ask of
their tracking process (:mod:`pixelzoo.pipeline.tracking.server`), and the ops that process runs.

- train logs its best checkpoint as an MLflow 3 model (a LoggedModel linked to the train run, with a
  signature, ``name="model"``) and registers a version of the registered model named after the experiment:
  ``models:/<experiment>/<version>``; each version's ``run_id`` is its train run.
- evaluate tags that version with its ``test_bits_per_dim`` and moves the alias ``best`` to it when it is
  the best so far (aliases; the deprecated stages are not used): ``models:/<experiment>@best``.
- train runs record MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network;
  GPU utilisation and memory where pynvml sees a GPU), sampled in the tracking process: they are the
  machine's figures, which is what MLflow's own monitor measures.

Stage side: cheap imports only (the stage must not import MLflow). Ops: run in the tracking process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ALIAS = "best"
TAG_TEST_BPD = "pixelzoo.test_bits_per_dim"
TAG_EVALUATE_RUN = "pixelzoo.evaluate_run_id"
MODEL_NAME = "model"  # the LoggedModel's name within its run
# Uploading a checkpoint may take longer than the stage's 3-s per-call limit for metrics.
_UPLOAD_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}


# ----------------------------------------------------------------------------- stage side
def registered_name(experiment: str) -> str:
    """One registered model per experiment, named as the experiment key."""
    return experiment


def log_trained_model(run: Any, checkpoint: Path, experiment: str, data: dict[str, Any], conditional: bool
                      ) -> None:
    """At the end of train: log ``checkpoint`` as the run's MLflow model and register a version."""
    shape = {k: int(data[k]) for k in ("channels", "height", "width")}

    def said(result: dict[str, Any]) -> None:
        print(f"MLflow model {result['model_uri']} registered as "
              f"models:/{result['name']}/{result['version']}", flush=True)

    run.call_at_finish("log_model", str(Path(checkpoint).resolve()), registered_name(experiment), shape,
                       conditional, env=_UPLOAD_ENV, then=said)


def promote_if_best(run: Any, experiment: str, train_run_id: str, test_bpd: float) -> None:
    """At the end of evaluate: tag the train run's model version, alias it ``best`` if it is the best."""

    def said(result: dict[str, Any] | None) -> None:
        if result is None:
            print(f"note: train run {train_run_id} logged no MLflow model (trained before models were "
                  "logged); no alias set", flush=True)
        elif result["best"]:
            print(f"models:/{result['name']}@{ALIAS} -> version {result['version']}", flush=True)
        else:
            print(f"models:/{result['name']}@{ALIAS} stays version {result['best_version']} "
                  f"({result['best_bpd']:.6f} <= {test_bpd:.6f} bits/dim)", flush=True)

    run.call_at_finish("set_best_alias", registered_name(experiment), train_run_id, float(test_bpd),
                       then=said)


def track_system_metrics(run: Any, call: Callable[..., Any]) -> None:
    """Start MLflow's system-metrics monitor for ``run`` now; it stops when the stage finishes."""
    call("start_system_metrics", run.uri, run.run_id)
    run.call_at_finish("stop_system_metrics")


# ----------------------------------------------------------------------------- tracking-process ops
def _requirements() -> list[str]:
    """Pinned to what is installed here (no inference: it would load the model in a subprocess)."""
    out = []
    for dist in ("torch", "numpy", "mlflow", "pyyaml", "pydantic"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return out


def _code_copy(into: Path) -> Path:
    """This tree's pixelzoo package without caches: the code a logged model loads with."""
    src = Path(__file__).resolve().parent
    dst = into / "pixelzoo"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return dst


def log_model(uri: str, run_id: str, checkpoint: str, name: str, shape: dict[str, int], conditional: bool
              ) -> dict[str, Any]:
    """``Model.log(name="model", flavor=mlflow.pyfunc, run_id=...)``, then a version of registered model
    ``name`` (linked to the run)."""
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    saved = os.environ.get("MLFLOW_EXPERIMENT_ID")
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id  # the LoggedModel belongs to its run's experiment
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # MLflow 3 asks for predict() type hints or an input example; the explicit signature covers both
            warnings.simplefilter("ignore")
            from pixelzoo.mlflow_model import PixelZooModel, signature

            info = Model.log(
                artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                registered_model_name=name,
                python_model=PixelZooModel(), artifacts={"checkpoint": checkpoint},
                signature=signature(shape["channels"], shape["height"], shape["width"], conditional),
                pip_requirements=_requirements(), code_paths=[str(_code_copy(Path(tmp)))],
                tags={"pixelzoo.experiment": name},
            )
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = saved
    return {"model_id": info.model_id, "model_uri": info.model_uri, "name": name,
            "version": str(info.registered_model_version)}


def set_best_alias(uri: str, run_id: str, name: str, train_run_id: str, test_bpd: float
                   ) -> dict[str, Any] | None:
    """Tag the version of ``name`` that ``train_run_id`` logged with its test bits/dim; move the alias
    ``best`` to it when no version has a lower one. None when that run logged no version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{train_run_id}'")
    except MlflowException:  # no such registered model
        return None
    if not versions:
        return None
    version = max(versions, key=lambda v: int(v.version))
    client.set_model_version_tag(name, version.version, TAG_TEST_BPD, repr(float(test_bpd)))
    client.set_model_version_tag(name, version.version, TAG_EVALUATE_RUN, run_id)
    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        current = None
    best_bpd = float(current.tags.get(TAG_TEST_BPD, "inf")) if current is not None else float("inf")
    if current is None or str(current.version) == str(version.version) or test_bpd < best_bpd:
        client.set_registered_model_alias(name, ALIAS, version.version)
        return {"name": name, "version": version.version, "best": True}
    return {"name": name, "version": version.version, "best": False, "best_version": current.version,
            "best_bpd": best_bpd}


_MONITORS: dict[str, Any] = {}


def start_system_metrics(uri: str, run_id: str) -> bool:
    """MLflow's SystemMetricsMonitor for ``run_id`` in this (the tracking) process; False without psutil."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
    except ImportError:  # psutil missing: MLflow's monitor needs it
        return False
    monitor.start()
    _MONITORS[run_id] = monitor
    return True


def stop_system_metrics(uri: str, run_id: str) -> None:
    """Stop the monitor and send what it sampled last."""
    monitor = _MONITORS.pop(run_id, None)
    if monitor is None:
        return
    # MLflow's finish() drops the samples since the last publish; a run shorter than one sampling
    # interval would have none: stop the thread, publish what it collected, then flush.
    monitor._shutdown_event.set()
    if monitor._process is not None:
        monitor._process.join()
    metrics = monitor.aggregate_metrics()
    if metrics:
        monitor.publish_metrics(metrics)
    monitor.finish()


OPS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    log_model, set_best_alias, start_system_metrics, stop_system_metrics,
)}
