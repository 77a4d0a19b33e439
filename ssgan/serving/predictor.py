"""A trained classifier with everything it needs to score raw inputs: the discriminator, the class names,
the input shape, the training-time preprocessing and (tables) the feature columns.

`Predictor.from_checkpoint` rebuilds it from a run's checkpoint.pt; `predict_frame` takes a table
(DataFrame with the training feature columns, by name), or an array (N, F) / (N, C, H, W) / flat pixels
(N, C*H*W) of raw values, and returns one row per input: the predicted class name and one probability
column per class. Inputs that do not fit the model are a `DataError` naming the problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ssgan.data.preprocess import Preprocessor
from ssgan.data.preprocess import from_dict as preprocess_from_dict
from ssgan.errors import DataError
from ssgan.nets.inference import predict_proba
from ssgan.serving.checkpoint import classifier_from_checkpoint

PROB_PREFIX = "p_"


@dataclass
class Predictor:
    classifier: nn.Module  # eval mode, CPU
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    preprocess: Preprocessor
    feature_names: Optional[tuple[str, ...]] = None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "Predictor":
        if state.get("preprocess") is None:
            raise DataError("this checkpoint predates saved preprocessing (no 'preprocess' entry); retrain to predict")
        features = state.get("feature_names")
        return cls(classifier_from_checkpoint(state), tuple(str(c) for c in state["class_names"]),
                   tuple(state["input_shape"]), preprocess_from_dict(state["preprocess"]),
                   tuple(features) if features else None)

    def inputs(self, data: Any) -> np.ndarray:
        """Raw inputs as a float array of the training shape (N, *input_shape)."""
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            if self.feature_names and all(isinstance(c, str) for c in data.columns) and not _positional(data):
                missing = [c for c in self.feature_names if c not in data.columns]
                if missing:
                    raise DataError(f"the input lacks feature column(s) {', '.join(map(repr, missing))} that the model "
                                    f"was trained on (expected: {', '.join(self.feature_names)})")
                data = data[list(self.feature_names)]
            data = data.to_numpy()
        x = np.asarray(data)
        if x.dtype == object or not np.issubdtype(x.dtype, np.number):
            try:
                x = x.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError("the input holds non-numeric values; features and pixels must be numbers") from None
        if x.ndim == 1:
            x = x[None]
        per_row = int(np.prod(self.input_shape))
        if x.shape[1:] != self.input_shape:
            if int(np.prod(x.shape[1:])) != per_row:
                raise DataError(f"each input has shape {tuple(x.shape[1:])} but the model takes {self.input_shape} "
                                f"({per_row} values per row)")
            x = x.reshape(len(x), *self.input_shape)
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
            raise DataError(f"input row {bad} contains NaN or inf; impute or drop it first")
        return x.astype(np.float32)

    def predict_proba(self, data: Any) -> np.ndarray:
        x = self.preprocess(self.inputs(data))
        with torch.no_grad():
            return predict_proba(self.classifier, x, len(self.class_names)).numpy()

    def predict_frame(self, data: Any):
        """DataFrame: `predicted` (class name) and `p_<class>` per class."""
        import pandas as pd

        probs = self.predict_proba(data)
        frame = pd.DataFrame({"predicted": [self.class_names[i] for i in probs.argmax(1)]})
        for k, name in enumerate(self.class_names):
            frame[PROB_PREFIX + name] = probs[:, k]
        return frame


def _positional(df) -> bool:
    """A DataFrame whose columns are 0..n-1 (MLflow's tensor input turned into a frame)."""
    return [str(c) for c in df.columns] == [str(i) for i in range(df.shape[1])]
