"""The trained classifier as an MLflow model: logged as a pyfunc, registered under an alias; loaded back by
ssgan/serving/predict.py (`ssgan predict`, `ssgan sample`) or served over HTTP with `mlflow models serve`.

The pyfunc carries the run's checkpoint.pt (network weights, config, class names, preprocessing) and
the ssgan package itself (`code_paths`), so it loads wherever torch and MLflow are installed. Its
`predict` takes raw inputs (a DataFrame with the training feature columns, or an array of raw pixels /
features) and returns a DataFrame: `predicted` (class name) and `p_<class>` per class.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import mlflow
import numpy as np
import pandas as pd
import torch

import ssgan
from ssgan.errors import SSGANError
from ssgan.serving.checkpoint import read_checkpoint
from ssgan.serving.predictor import Predictor

class SSGANPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.checkpoint = read_checkpoint(context.artifacts["checkpoint"], "the model's checkpoint")
        self.predictor = Predictor.from_checkpoint(self.checkpoint)

    # the hint names the table case; image models get arrays (MLflow validates neither: the signature does)
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict_frame(model_input)


def log_pyfunc(state: dict[str, Any], x_example: torch.Tensor) -> str:
    """Log the checkpoint `state` as the active run's pyfunc model "model"; returns its model URI. `x_example`
    holds a few network inputs, turned back into raw values for the input example and signature. A model
    the run logged before (the partial model of an interrupted part of a resumed run) is retired."""
    from mlflow.models import infer_signature

    predictor = Predictor.from_checkpoint(state)
    raw = predictor.preprocess.inverse(x_example[:4].cpu())
    if predictor.feature_names:  # tables: float64 columns (what pandas reads), by name
        example = pd.DataFrame(raw.astype(np.float64), columns=list(predictor.feature_names))
    else:  # arrays of raw pixels / features
        example = raw.astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "checkpoint.pt"
        torch.save(state, path)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"checkpoint": str(path)},
            code_paths=[str(served_code(Path(d)))],
            signature=infer_signature(example, predictor.predict_frame(example)), input_example=example,
            metadata={"class_names": list(predictor.class_names)},
            # stated, not inferred: MLflow's inference reloads the model in a subprocess (seconds)
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                              "pandas", "scikit-learn"],
        )
    retire_earlier_models(mlflow.active_run().info.run_id, info.model_id)
    return info.model_uri


SERVED = ("__init__.py", "config.py", "errors.py", "data", "nets", "evaluation", "serving")


def served_code(dest: Path) -> Path:
    """A copy of the part of the ssgan package that a served model imports (the layers below tracking, less
    training: tests/test_architecture.py checks a served model loads no training code), without bytecode
    caches: what the pyfunc carries as `code_paths`, a few dozen small files rather than the whole package."""
    src, pkg = Path(ssgan.__file__).parent, dest / "ssgan"
    pkg.mkdir()
    for name in SERVED:
        if (src / name).is_dir():
            shutil.copytree(src / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src / name, pkg / name)
    return pkg


def retire_earlier_models(run_id: str, current: str) -> list[str]:
    """A run holds one model, its latest (`runs:/<run>/model` resolves to it, too): the run's other logged
    models are deleted, but a registered one is kept and tagged `superseded_by`. Returns the deleted ids."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    earlier = [m for m in client.search_logged_models([run.info.experiment_id],
                                                      filter_string=f"source_run_id = '{run_id}'")
               if m.model_id != current]
    if not earlier:
        return []
    # a version names its model in `source` (models:/<model id>); search results leave `model_id` empty
    sources = " ".join(f"{v.model_id} {v.source}" for v in client.search_model_versions(f"run_id = '{run_id}'"))
    deleted = []
    for m in earlier:
        if m.model_id in sources:
            client.set_logged_model_tags(m.model_id, {"superseded_by": current})
        else:
            client.delete_logged_model(m.model_id)
            deleted.append(m.model_id)
    return deleted


def register(model_uri: str, name: str, alias: str) -> str:
    """Register `model_uri` as a new version of `name` and point `alias` at it; returns models:/name@alias."""
    client = mlflow.MlflowClient()
    try:
        version = mlflow.register_model(model_uri, name)
        client.set_registered_model_alias(name, alias, version.version)
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"could not register {model_uri} as {name!r}@{alias!r}: {str(e).splitlines()[0]}") from None
    return f"models:/{name}@{alias}"


def check_alias(alias: Optional[str]) -> None:
    if alias is not None and (alias == "latest" or re.fullmatch(r"v\d+", alias)):
        raise SSGANError(f"--alias {alias!r} is reserved by MLflow; choose another name (e.g. champion)")
