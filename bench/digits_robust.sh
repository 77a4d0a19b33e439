#!/usr/bin/env bash
# digits-20 variants scored over several split seeds and training seeds (SPLITS="0 1 2 3 4"; training
# seeds S + each of OFFSETS="0 1000"), so that a variant's number is not one trajectory's draw (docs/results/
# speed.md, "Time to accuracy"). Each run is one process with one thread, JOBS at a time: bench/gpu_recipe.py
# on configs/digits-20-best.yaml with the variant's overrides. Results: OUT/<variant>/ (per-run summaries,
# per-epoch logs, test probabilities) and OUT/summary.md. A run whose summary is there is not run again.
#   bash bench/digits_robust.sh                 # every variant below
#   bash bench/digits_robust.sh base lr1e3      # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/explore-digits-20-robust}
JOBS=${JOBS:-2}
OFFSETS=${OFFSETS:-0 1000}
SPLITS=${SPLITS:-0 1 2 3 4}
declare -A VARIANTS=(
  [base]=""
  [ema999]="train.ema_decay=0.999"
  [in05]="model.input_noise=0.5"
  [hn08]="model.hidden_noise=0.8"
  [uw2]="train.unsup_weight=2.0"
  [ep240]="train.epochs=240"
  [lr1e3]="train.lr=0.001"
  [lr1e3ep240]="train.lr=0.001 train.epochs=240"
  [lr5e4]="train.lr=0.0005"
  [lr5e4ep240]="train.lr=0.0005 train.epochs=240"
  [lr2e4]="train.lr=0.0002"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(base ema999 in05 hn08 uw2 ep240 lr1e3 lr1e3ep240 lr5e4 lr5e4ep240 lr2e4)
for name in "${names[@]}"; do
  [ -n "${VARIANTS[$name]+set}" ] || { echo "error: unknown variant '$name'; one of: ${!VARIANTS[*]}" >&2; exit 2; }
  mkdir -p "$OUT/$name"
  export RUN_OUT="$OUT/$name" RUN_SETS=""
  for kv in ${VARIANTS[$name]}; do RUN_SETS="$RUN_SETS --set $kv"; done
  for s in $SPLITS; do for o in $OFFSETS; do echo "$s $((s + o))"; done; done |
    xargs -P "$JOBS" -L 1 bash -c '[ -f "$RUN_OUT/digits-20-best-seed$0-init$1.json" ] || OMP_NUM_THREADS=1 \
      .venv/bin/python bench/gpu_recipe.py --config configs/digits-20-best.yaml --seed "$0" --inits "$1" \
      --set train.device=cpu $RUN_SETS --out "$RUN_OUT" > /dev/null 2>> "$RUN_OUT.err"' ||
    { echo "error: a run of variant $name failed; see $OUT/$name.err" >&2; exit 1; }
done
.venv/bin/python - "$OUT" <<'PY'
import json, statistics as st, sys
from pathlib import Path
from scipy import stats
out = Path(sys.argv[1])
variants = {}
for folder in out.iterdir():
    runs = {}
    for f in folder.glob("*-init*.json") if folder.is_dir() else ():
        d = json.loads(f.read_text())
        runs[(d["seed"], d["train_seed"])] = (100 * d["test_accuracy"], d["overrides"])
    if runs:
        variants[folder.name] = runs
base = {k: a for k, (a, _) in variants.get("base", {}).items()}
lines = ["| variant | overrides | runs | mean (%) | sd | vs base: paired mean difference [95 % CI] | per split seed, "
         "in order (training seeds S / S + 1000 / ...) |", "|---|---|---|---|---|---|---|"]
for name, runs in sorted(variants.items(), key=lambda kv: (kv[0] != "base", -st.mean(a for a, _ in kv[1].values()))):
    acc = [runs[k][0] for k in sorted(runs)]
    sets = " ".join(o for o in next(iter(runs.values()))[1] if o != "train.device=cpu") or "-"
    diff = [runs[k][0] - base[k] for k in sorted(runs) if k in base]
    vs = ""
    if name != "base" and len(diff) > 1:
        lo, hi = stats.t.interval(0.95, len(diff) - 1, loc=st.mean(diff), scale=stats.sem(diff))
        vs = f"{st.mean(diff):+.2f} [{lo:+.2f}, {hi:+.2f}]"
    per = " · ".join(" / ".join(f"{runs[k][0]:.1f}" for k in sorted(runs) if k[0] == s)
                     for s in sorted({k[0] for k in runs}))
    lines.append(f"| {name} | {sets} | {len(acc)} | {st.mean(acc):.2f} | {st.stdev(acc):.2f} | {vs} | {per} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
