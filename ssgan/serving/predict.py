"""Scoring new inputs with a trained model (`ssgan predict`): model references resolved to their checkpoint,
inputs read from CSV / parquet / npz / image folders, one CSV row of predictions per input."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from ssgan.errors import DataError, SSGANError
from ssgan.serving.checkpoint import read_checkpoint
from ssgan.serving.predictor import Predictor
from ssgan.serving.pyfunc import SSGANPyfunc

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def load_checkpoint(ref: str) -> dict[str, Any]:
    """The checkpoint of a model reference (`--model` of `ssgan predict` and `ssgan sample`): an MLflow run id,
    a models:/ or runs:/ URI (what summary.json's `model_uri` and `registered_model` give), a logged model
    folder, or a checkpoint.pt file. URIs resolve in MLflow's current tracking store."""
    path = Path(ref)
    if path.is_file():
        return read_checkpoint(path)
    uri = f"runs:/{ref}/model" if RUN_ID.match(ref) else ref
    if not (path.is_dir() or uri.startswith(("models:/", "runs:/"))):
        raise SSGANError(f"--model {ref!r} is neither a file, a model folder, a run id nor a models:/ or runs:/ URI")
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as e:  # noqa: BLE001 -- MlflowException, OSError: the reference does not resolve
        raise SSGANError(f"--model {ref!r} does not resolve to a model in {mlflow.get_tracking_uri()}: "
                         f"{str(e).splitlines()[0][:160]}") from None
    try:
        inner = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 -- MlflowException: another flavor (e.g. a model logged before this one)
        inner = None
    if not isinstance(inner, SSGANPyfunc):
        raise SSGANError(f"--model {ref!r} is an MLflow model but not an ssgan classifier")
    return inner.checkpoint


def load_predictor(ref: str) -> Predictor:
    """The classifier of a model reference (see `load_checkpoint`), ready to score raw inputs."""
    return Predictor.from_checkpoint(load_checkpoint(ref))


def read_inputs(path: str, predictor: Predictor) -> tuple[list[str], Any]:
    """Row identifiers and raw inputs from a CSV/parquet table, an .npz (array X) or an image folder."""
    from ssgan.data.imagefolder import decode_images, list_images

    p = Path(path)
    if p.is_dir():
        if len(predictor.input_shape) != 3:
            raise DataError(f"--input {path!r} is a folder of images but the model takes tables of "
                            f"{predictor.input_shape[0]} features")
        files = list_images(p)
        if not files:
            raise DataError(f"--input {path!r} holds no images (.png, .jpg, ...)")
        color = "gray" if predictor.input_shape[0] == 1 else "rgb"
        x, keep = decode_images(files, predictor.input_shape[1:], color, where=path)
        return [str(f) for f, ok in zip(files, keep) if ok], x
    if not p.is_file():
        raise DataError(f"--input {path!r} does not exist")
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as f:
            if "X" not in f.files:
                raise DataError(f"{path!r} has no array 'X'")
            x = f["X"]
        return [str(i) for i in range(len(x))], x
    from ssgan.data.tables import read_table

    df = read_table(p)
    return [str(i) for i in range(len(df))], df


def write_predictions(ref: str, input_path: str, out: str) -> Path:
    predictor = load_predictor(ref)
    ids, data = read_inputs(input_path, predictor)
    frame = predictor.predict_frame(data)
    frame.insert(0, "input", ids)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_path, index=False)
    return out_path
