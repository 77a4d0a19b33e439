"""Peak memory of loading a table (`ssgan.data.load_split` on a CSV or parquet file), in a fresh process each.

    python bench/table_memory.py --rows 200000 --features 200 --out bench/results/tables-memory

Writes a float32 matrix of ROWS x FEATURES (standard normal; 1,000 labeled rows of 5 classes, the rest
unlabeled) as CSV and parquet once, then loads each in a child process and reports the child's peak resident
memory over its resident memory just before loading (torch, pandas and pyarrow imported), in MiB and as a
multiple of the float32 feature matrix.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys
import numpy, pandas, pyarrow.parquet, torch  # noqa: F401  (imported before the baseline is taken)
from ssgan.config import load_config
try:
    from ssgan.data.splits import load_split
except ImportError:  # the package before it had subpackages (to measure an older checkout)
    from ssgan.data import load_split

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

cfg = load_config(None, [f"data.name={sys.argv[1]}", f"data.path={sys.argv[2]}", "data.labels=null"])
before = rss_mib()
split = load_split(cfg.data)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before_mib": before, "peak_mib": peak, "after_mib": rss_mib(), "rows": len(split.x_train) + len(split.x_test)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=200)
    ap.add_argument("--out", default="bench/results/tables-memory")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"table-{args.rows}x{args.features}.csv", out / f"table-{args.rows}x{args.features}.parquet"
    if not (csv.exists() and parquet.exists()):
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(0)
        df = pd.DataFrame(rng.standard_normal((args.rows, args.features)).astype(np.float32),
                          columns=[f"f{i}" for i in range(args.features)])
        label = rng.integers(0, 5, args.rows).astype(float)
        label[1000:] = np.nan
        df["label"] = label
        df.to_parquet(parquet)
        df.to_csv(csv, index=False, float_format="%.5g")
    matrix_mib = args.rows * args.features * 4 / 2**20
    results = {"matrix_mib": round(matrix_mib, 1)}
    for name, path in (("csv", csv), ("parquet", parquet)):
        done = subprocess.run([sys.executable, "-c", CHILD, name, str(path)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"error: loading {path} failed: {done.stderr.strip().splitlines()[-1]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["peak_over_matrix"] = round((r["peak_mib"] - r["before_mib"]) / matrix_mib, 2)
        r["kept_over_matrix"] = round((r["after_mib"] - r["before_mib"]) / matrix_mib, 2)
        results[name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        print(f"{name}: peak {r['peak_mib'] - r['before_mib']:.0f} MiB over the {r['before_mib']:.0f} MiB before loading "
              f"= {r['peak_over_matrix']}x the {matrix_mib:.0f} MiB float32 matrix; kept afterwards "
              f"{r['after_mib'] - r['before_mib']:.0f} MiB = {r['kept_over_matrix']}x", flush=True)
    (out / "table_memory.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
