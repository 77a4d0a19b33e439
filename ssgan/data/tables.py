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
    names = feature_names(columns, path, label_column, feature_columns)
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


def feature_names(columns: Sequence[str], path: Path, label_column: Optional[str],
                  feature_columns: Optional[Sequence[str]]) -> list[str]:
    """`feature_columns`, all present; else every column but the label."""
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
    return names


def load_table(path: Path, label_column: str, feature_columns: Optional[Sequence[str]]
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(N, F) float32 features, their names and the labels (`label_values`) of a training or test table.

    The features are read as float32 from the start (CSV: pandas' parser told the dtype; parquet: in row
    batches into the one (N, F) array), so loading peaks near twice the feature matrix rather than at
    several float64 copies. A column that is not numeric falls back to `read_table` + `table_features`,
    whose error names the column and row."""
    if path.suffix.lower() in (".parquet", ".pq"):
        columns = _parquet_columns(path)
    else:
        try:
            columns = [str(c) for c in _read(path, nrows=0).columns]
        except ValueError as e:
            raise DataError(f"could not read {str(path)!r} as a table: {str(e).splitlines()[0]}") from None
    if label_column not in columns:
        raise DataError(f"{str(path)!r} has no label column {label_column!r} "
                        f"(columns: {', '.join(columns)}); set data.label_column")
    names = feature_names(columns, path, label_column, feature_columns)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            x, labels = _parquet_float32(path, names, label_column)
        else:
            x, labels = _csv_float32(path, names, label_column)
    except _NotNumeric:
        df = read_table(path)  # slower, and precise about what is not a number
        table_features(df, path, label_column, names)
        raise DataError(f"{str(path)!r}: a feature column is not numeric") from None
    if len(x) == 0:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    bad = ~np.isfinite(x)
    if bad.any():
        row, j = divmod(int(np.flatnonzero(bad)[0]), x.shape[1])
        col = np.flatnonzero(bad[:, j])
        raise DataError(f"{str(path)!r} column {names[j]!r} has {len(col)} missing (NaN) or infinite value(s), "
                        f"first at data row {col[0] + 1}; impute or drop them first")
    return x, names, label_values(labels, path)


class _NotNumeric(Exception):
    pass


def _read(path: Path, **kwargs):
    import pandas as pd

    try:
        return pd.read_csv(path, skipinitialspace=True, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{str(path)!r} is empty; it needs a header row and data rows") from None
    except (OSError, ImportError) as e:
        raise DataError(f"could not read {str(path)!r} as a table: {str(e).splitlines()[0]}") from None


def _csv_float32(path: Path, names: list[str], label_column: str) -> tuple[np.ndarray, list]:
    """In chunks of rows, each parsed as float32 into its place of the one (N, F) array. The lines counted
    first bound N from above (blank lines and quoted line breaks make fewer rows)."""
    with open(path, "rb") as f:
        bound = max(sum(1 for _ in f) - 1, 0)
    x = np.empty((bound, len(names)), dtype=np.float32)
    labels: list = []
    row = 0
    try:
        for chunk in _read(path, usecols=[*names, label_column], dtype={n: np.float32 for n in names},
                           chunksize=1 << 15):
            labels.extend(chunk.pop(label_column).tolist())
            x[row : row + len(chunk)] = chunk[names].to_numpy(dtype=np.float32)
            row += len(chunk)
    except ValueError as e:  # a feature that does not parse as a number
        raise _NotNumeric from e
    return (x if row == bound else x[:row].copy()), labels


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return [str(c) for c in pq.read_schema(path).names]
    except (OSError, ValueError) as e:
        raise DataError(f"could not read {str(path)!r} as a table: {str(e).splitlines()[0]}") from None


def _parquet_float32(path: Path, names: list[str], label_column: str) -> tuple[np.ndarray, list]:
    """Column by column, each cast into its place of the one (N, F) float32 array: pyarrow decodes one column
    chunk at a time instead of the whole table, and its memory pool hands the buffers back afterwards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    x = np.empty((table.metadata.num_rows, len(names)), dtype=np.float32)
    try:
        for j, name in enumerate(names):
            col = table.read(columns=[name]).column(0)
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
                raise _NotNumeric
            x[:, j] = col.to_numpy()  # nulls -> NaN
            del col
        labels = table.read(columns=[label_column]).column(0).to_pylist()
    finally:
        pa.default_memory_pool().release_unused()
    return x, labels


def table_labels(df, path: Path, label_column: str) -> np.ndarray:
    """Labels as an object array: int or str per labeled row, None per unlabeled row."""
    if label_column not in df.columns:
        raise DataError(f"{str(path)!r} has no label column {label_column!r} "
                        f"(columns: {', '.join(map(str, df.columns))}); set data.label_column")
    return label_values(df[label_column].tolist(), path)


def label_values(values: Sequence, path: Path) -> np.ndarray:
    """The label column's values as an object array: int or str per labeled row, None per unlabeled row."""
    labels = []
    for row, v in enumerate(values, start=1):
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
