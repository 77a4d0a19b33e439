"""Issue 6's table benchmark: scikit-learn's bundled breast_cancer and wine written as CSV files (feature
columns by name, class names as labels), then `ssgan compare` with 10 % of the training rows labeled:
ssgan vs the supervised baseline, the consistency methods (issue 33) and LabelSpreading over 5 split seeds, on
the same splits.

    python bench/tables.py            # writes bench/results/tables/*.csv, runs both comparisons
    python bench/tables.py --csv-only

Per dataset: 20 % of the rows are the fixed test set (data.test_fraction); of the remaining training rows
10 % keep their label (drawn class-balanced per split seed) and the rest are the unlabeled pool.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results/tables"


def write_csv(name: str) -> tuple[Path, int]:
    """The dataset as CSV; returns its path and 10 % of its training rows (the label budget)."""
    import pandas as pd
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    df = pd.DataFrame(data.data, columns=[str(c) for c in data.feature_names])
    df["label"] = [str(data.target_names[t]) for t in data.target]
    path = OUT / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    train_rows = len(df) - math.ceil(0.2 * len(df))
    return path, round(0.1 * train_rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv-only", action="store_true")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default="ssgan,supervised,vat,mean_teacher,pi_model,label_spreading",
                    help="the comparison's methods (issue 6's table: ssgan,supervised,label_spreading)")
    args = ap.parse_args()
    uri = f"sqlite:///{ROOT / 'bench/results/mlflow.db'}"
    for name in ("breast_cancer", "wine"):
        path, labels = write_csv(name)
        print(f"{name}: {path} ({labels} labels = 10 % of the training rows)", flush=True)
        if args.csv_only:
            continue
        subprocess.run([str(Path(sys.executable).parent / "ssgan"), "-q", "compare", "-c", str(ROOT / "configs/tables.yaml"),
                        "--set", f"data.path={path}", "--labels", str(labels), "--seeds", str(args.seeds),
                        "--methods", args.methods, "--set", f"tracking.uri={uri}",
                        "--set", f"tracking.experiment=tables-{name}", "--out", str(ROOT / f"bench/results/compare-{name}")],
                       check=True)


if __name__ == "__main__":
    main()
