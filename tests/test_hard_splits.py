"""bench/hard_splits.py: the confusion that every run of one split makes, and its picture."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ssgan.config import load_config, to_dict
from ssgan.data.splits import load_split

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from hard_splits import runs_of, shared_confusion  # noqa: E402


def summary(cells):
    cm = np.diag([10, 10, 10])
    for (t, p), n in cells.items():
        cm[t, p] = n
    return {"confusion_matrix": cm.tolist()}


def test_the_shared_confusion_is_the_one_every_run_makes_not_the_largest_of_one_run():
    runs = [summary({(1, 2): 9, (0, 2): 30}),  # one run's largest confusion (0 -> 2) is its own
            summary({(1, 2): 8, (2, 0): 20})]
    assert shared_confusion(runs) == (1, 2, 8)


def test_runs_of_a_split_are_read_by_training_seed_and_drawn(tmp_path):
    cfg = load_config(None, ["data.name=digits", "data.labels=20", "data.split_seed=3"])
    y_test = load_split(cfg.data).y_test.numpy()
    for init, wrong in ((1003, 2), (3, 5)):
        probs = np.eye(10, dtype=np.float32)[y_test]
        ones = np.where(y_test == 1)[0][:wrong]
        probs[ones] = np.eye(10, dtype=np.float32)[7]  # test 1s read as 7
        cm = np.zeros((10, 10), dtype=int)
        np.add.at(cm, (y_test, probs.argmax(1)), 1)
        name = f"digits-seed3-init{init}"
        np.save(tmp_path / f"{name}-probs.npy", probs)
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"config": to_dict(cfg), "confusion_matrix": cm.tolist(), "test_accuracy": 1 - wrong / len(y_test)}))
    (tmp_path / "digits-seed3-ensemble.json").write_text("{}")  # not a run

    assert [init for init, _, _ in runs_of(tmp_path, 3)] == [3, 1003]
    out = tmp_path / "hard.png"
    done = subprocess.run([sys.executable, str(BENCH / "hard_splits.py"), str(tmp_path), "--splits", "3",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "every run reads at least 2 of the" in done.stdout and "test 1s as 7; training seed 3 reads 5" in done.stdout
    assert out.stat().st_size > 0


def test_a_split_without_runs_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "hard_splits.py"), str(tmp_path), "--splits", "4"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: no runs of split seed 4 in {tmp_path}; run bench/gpu_recipe.py --seed 4 first"]


def test_split_seeds_that_are_not_numbers_are_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "hard_splits.py"), str(tmp_path), "--splits", "0,one"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: --splits takes distinct comma-separated integers >= 0 (e.g. 0,1), got '0,one'"]
