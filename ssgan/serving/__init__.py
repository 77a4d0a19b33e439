"""Serving a trained model: the checkpoint layout (ssgan.serving.checkpoint), the `Predictor` that scores
raw inputs, the MLflow pyfunc model (log, register, serve), `ssgan predict` and `ssgan sample`.
Imports no training code."""
from ssgan.serving.checkpoint import make_checkpoint, read_checkpoint
from ssgan.serving.predict import load_checkpoint, load_predictor, write_predictions
from ssgan.serving.predictor import Predictor
from ssgan.serving.pyfunc import SSGANPyfunc, check_alias, log_pyfunc, register
from ssgan.serving.samples import write_samples

__all__ = ["make_checkpoint", "read_checkpoint", "load_checkpoint", "load_predictor", "write_predictions",
           "Predictor", "SSGANPyfunc", "log_pyfunc", "register", "check_alias", "write_samples"]
