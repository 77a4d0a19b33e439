"""The trained classifier as an MLflow model: logged as a pyfunc, registered under an alias; loaded back by
ssgan/serving/predict.py (`ssgan predict`, `ssgan sample`) or served over HTTP with `mlflow models serve`.

The pyfunc carries the run's checkpoint.pt (network weights, config, class names, preprocessing) and
the ssgan package itself (`code_paths`), so it loads wherever torch and MLflow are installed. Its
`predict` takes raw inputs (a DataFrame with the training feature columns, or an array of raw pixels /
features) and returns a DataFrame: `predicted` (class name) and `p_<class>` per class.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

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


def create_model(run_id: str, experiment_id: Optional[str] = None,
                 params: Optional[dict[str, str]] = None) -> tuple[str, str]:
    """A new logged model "model" of run `run_id` (PENDING until `log_pyfunc` uploads it); returns its id and
    artifact location.
    `experiment_id` and `params` (the model's params: the run's config) save a request to look them up."""
    from mlflow.tracking.context.registry import resolve_tags

    client = mlflow.MlflowClient()
    if experiment_id is None or params is None:
        run = client.get_run(run_id)
        experiment_id, params = run.info.experiment_id, run.data.params
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id, params=params,
                                       tags=resolve_tags())
    return model.model_id, model.artifact_location


def log_pyfunc(state: dict[str, Any], x_example: torch.Tensor, run_id: str, experiment_id: Optional[str] = None,
               params: Optional[dict[str, str]] = None, retire: bool = True,
               model: Optional[tuple[str, str]] = None, submit: Optional[Callable[..., Future]] = None) -> str:
    """Log the checkpoint `state` as run `run_id`'s pyfunc model "model"; returns its model URI. `x_example`
    holds a few network inputs, turned back into raw values for the input example and signature.
    `experiment_id` and `params` (the model's params: the run's config) save a request to look them up.
    `retire`: a model the run logged before (the partial model of an interrupted part of a resumed run, or an
    upload cut short) is retired. `model`: the logged model `create_model` made for it (else made here).
    `submit(fn, *args)`: runs the uploads (a pool's submit; else threads of a pool made here).

    What `mlflow.pyfunc.log_model` does, in fewer round trips to a far store: no active run, the model's
    files uploaded in parallel, and the run's metrics not copied onto the model."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    predictor = Predictor.from_checkpoint(state)
    raw = predictor.preprocess.inverse(x_example[:4].cpu())
    if predictor.feature_names:  # tables: float64 columns (what pandas reads), by name
        example = pd.DataFrame(raw.astype(np.float64), columns=list(predictor.feature_names))
    else:  # arrays of raw pixels / features
        example = raw.astype(np.float32)
    client = mlflow.MlflowClient()
    if experiment_id is None:
        experiment_id = client.get_run(run_id).info.experiment_id
    model_id, location = model or create_model(run_id, experiment_id, params)
    try:
        with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:
            submit = submit or pool.submit
            linked = submit(client.log_outputs, run_id, [LoggedModelOutput(model_id, step=0)])
            checkpoint, local = Path(d) / "checkpoint.pt", Path(d) / "model"
            torch.save(state, checkpoint)
            mlflow.pyfunc.save_model(
                path=str(local), mlflow_model=Model(artifact_path=location, model_uuid=model_id,
                                                    run_id=run_id, model_id=model_id,
                                                    metadata={"class_names": list(predictor.class_names)}),
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"checkpoint": str(checkpoint)},
                code_paths=[str(served_code(Path(d)))],
                signature=infer_signature(example, predictor.predict_frame(example)), input_example=example,
                # stated, not inferred: MLflow's inference reloads the model in a subprocess (seconds)
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                                  "pandas", "scikit-learn"],
            )
            repo = get_artifact_repository(location, tracking_uri=mlflow.get_tracking_uri())
            files = sorted(f for f in local.rglob("*") if f.is_file())
            uploads = [submit(repo.log_artifact, str(f), f.parent.relative_to(local).as_posix()
                                   if f.parent != local else None) for f in files]
            for done in [linked, *uploads]:
                done.result()
        client.finalize_logged_model(model_id, LoggedModelStatus.READY)
    except BaseException:
        if model is None:  # made here; one made before stays PENDING for the upload to be tried again
            with contextlib.suppress(Exception):  # the store may be what failed
                client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        raise
    if retire:
        retire_earlier_models(run_id, model_id, experiment_id)
    return f"models:/{model_id}"


PARALLEL_UPLOADS = 32  # a model is some 35 small files and its checkpoint


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


def retire_earlier_models(run_id: str, current: str, experiment_id: Optional[str] = None) -> list[str]:
    """A run holds one model, its latest (`runs:/<run>/model` resolves to it, too): the run's other logged
    models are deleted, but a registered one is kept and tagged `superseded_by`. Returns the deleted ids."""
    client = mlflow.MlflowClient()
    experiment_id = experiment_id or client.get_run(run_id).info.experiment_id
    earlier = [m for m in client.search_logged_models([experiment_id],
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
