"""Tables (.csv, .parquet) as features and labels.

One row per example; `data.label_column` holds the class (an integer or a name; empty, NaN or -1 =
unlabeled); the features are `data.feature_columns`, or every other column. Features must be numeric
and complete: a non-number or a missing value is an error that names the column and row, never a
silent NaN. Standardization happens later, on the training rows only (`ssgan.data.preprocess`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ssgan.errors import DataError

UNLABELED = -1
_MISSING_LABELS = {"", "-1", "-1.0", "nan", "none"}


def read_table(path: Path):
    """A DataFrame from a .csv or .parquet file (by suffix; anything else is read as CSV)."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{str(path)!r} is empty; it needs a header row and data rows") from None
    except (OSError, ValueError, ImportError) as e:
        raise DataError(f"could not read {str(path)!r} as a table: {str(e).splitlines()[0]}") from None


def table_features(df, path: Path, label_column: Optional[str], feature_columns: Optional[Sequence[str]]
                   ) -> tuple[np.ndarray, list[str]]:
    """(N, F) float32 features and their column names. `label_column` is left out when features are
    'all but the label'; it may be absent (prediction inputs)."""
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if feature_columns:
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise DataError(f"{str(path)!r} has no column(s) {', '.join(map(repr, missing))} "
                            f"(columns: {', '.join(columns)}); check data.feature_columns")
        names = list(feature_columns)
    else:
        names = [c for c in columns if c != label_column]
    if not names:
        raise DataError(f"{str(path)!r} has no feature columns besides the label {label_column!r}")
    if len(df) == 0:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    out = np.empty((len(df), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        col = df[name]
        values = _to_float(col)
        bad = np.flatnonzero(np.isnan(values) & col.notna().to_numpy())
        if len(bad):
            raise DataError(f"{str(path)!r} column {name!r}, data row {bad[0] + 1}: {col.iloc[bad[0]]!r} is not a "
                            "number; features must be numeric")
        missing = np.flatnonzero(~np.isfinite(values))
        if len(missing):
            raise DataError(f"{str(path)!r} column {name!r} has {len(missing)} missing (NaN) or infinite value(s), "
                            f"first at data row {missing[0] + 1}; impute or drop them first")
        out[:, j] = values
    return out, names


def table_labels(df, path: Path, label_column: str) -> np.ndarray:
    """Labels as an object array: int or str per labeled row, None per unlabeled row."""
    if label_column not in df.columns:
        raise DataError(f"{str(path)!r} has no label column {label_column!r} "
                        f"(columns: {', '.join(map(str, df.columns))}); set data.label_column")
    labels = []
    for row, v in enumerate(df[label_column].tolist(), start=1):
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip().lower() in _MISSING_LABELS:
            labels.append(None)
        elif isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()):
            labels.append(int(v))
        elif isinstance(v, float):
            raise DataError(f"{str(path)!r} data row {row}: label {str(v)!r} is not an integer class label "
                            "(use integers or names; empty / -1 = unlabeled)")
        else:
            labels.append(str(v).strip())
    return np.asarray(labels, dtype=object)


def encode_labels(raw: np.ndarray, path: Path, test: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Class indices 0..K-1 (UNLABELED for None) for `raw` and `test`, and the class names, sorted
    (numbers numerically, names alphabetically; a mix is compared as text)."""
    known = [v for v in raw if v is not None] + ([] if test is None else [v for v in test if v is not None])
    kinds = {type(v) for v in known}
    classes = sorted(set(known), key=(lambda v: v) if len(kinds) <= 1 else str)
    if len(classes) < 2:
        raise DataError(f"{str(path)!r}: found {len(classes)} labeled class(es); at least 2 are needed")
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([UNLABELED if v is None else index[v] for v in raw], dtype=np.int64)
    y_test = None
    if test is not None:
        if any(v is None for v in test):
            raise DataError(f"{str(path)!r}: the test file has unlabeled rows; every test row needs a label")
        y_test = np.asarray([index[v] for v in test], dtype=np.int64)
    return y, y_test, tuple(str(c) for c in classes)


def _to_float(col) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
