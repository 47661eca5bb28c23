"""The MLflow pyfunc flavour of a trained pixelzoo model: ``predict(levels)`` -> exact NLL per image.

    model = mlflow.pyfunc.load_model("models:/pixelcnn-digits@best")
    nats = model.predict(levels)          # float64 (N,): the NLL in nats of each N×C×H×W level image

The logged model holds the DVC-tracked ``model.pt`` as its artifact (``checkpoint``) and the pixelzoo code
that wrote it (``code/pixelzoo``), so it loads where only torch and MLflow are installed. A class-conditional
model takes ``{"levels": N×C×H×W, "labels": (N,)}``. The numbers are :meth:`pixelzoo.api.Model.nll`'s,
i.e. those ``evaluate`` sums into ``metrics/<exp>.json``.

Logged by the train stage through its tracking process (:mod:`pixelzoo.model_registry`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class PixelZooModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper; holds nothing when pickled (the checkpoint is an artifact, loaded on load)."""

    def load_context(self, context: Any) -> None:
        from pixelzoo.api import load

        self.model = load(context.artifacts["checkpoint"])

    # No type hints here: MLflow 3 would read them as the input schema (the signature is given instead).
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        levels, labels = model_input, None
        if isinstance(model_input, dict):
            levels, labels = model_input["levels"], model_input.get("labels")
        batch = int((params or {}).get("batch_size", 100))
        return self.model.nll(np.asarray(levels), labels, batch_size=batch).numpy()


def signature(channels: int, height: int, width: int, conditional: bool) -> Any:
    """Tensor signature: int64 levels N×C×H×W (and int64 labels (N,)) -> float64 NLL (N,)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    levels = TensorSpec(np.dtype("int64"), (-1, channels, height, width),
                        name="levels" if conditional else None)
    inputs = [levels] + ([TensorSpec(np.dtype("int64"), (-1,), name="labels")] if conditional else [])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]),
                          params=ParamSchema([ParamSpec("batch_size", "long", 100)]))
