"""MLflow models-from-code entry point: the pyfunc model that `ssgan.serving.pyfunc.log_pyfunc` logs.

MLflow runs this file when it loads the model (`mlflow.pyfunc.load_model`, `mlflow models serve`); the
weights, class names and preprocessing come from the model's checkpoint artifact."""
import mlflow

from ssgan.serving.pyfunc import SSGANPyfunc

mlflow.models.set_model(SSGANPyfunc())
