"""bench/epoch_stats.py: runs' last, lowest and windowed mean test error, read from their per-epoch logs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench/epoch_stats.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def write_log(path, accuracies, **other):
    path.write_text("".join(json.dumps({"epoch": e, "test_accuracy": a, **{k: v[e - 1] for k, v in other.items()}})
                            + "\n" for e, a in enumerate(accuracies, 1)))
    return path


def test_one_row_per_run_with_last_lowest_and_window_means(tmp_path):
    a = write_log(tmp_path / "a.jsonl", [0.90, 0.98, 0.99, 0.985])  # errors 10, 2, 1, 1.5 %
    b = write_log(tmp_path / "b.jsonl", [0.95, 0.97])                 # errors 5, 3 %
    out = run(f"{a}=Dai", b, "--windows", "1-2,3-4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "| run | epochs | last (%) | lowest (%) | mean 1-2 (%) | mean 3-4 (%) |",
        "|---|---|---|---|---|---|",
        "| Dai | 4 | 1.50 | 1.00 (epoch 3) | 6.00 | 1.25 |",
        "| b | 2 | 3.00 | 3.00 (epoch 2) | 4.00 | – |",
    ]


def test_another_accuracy_of_the_same_log_on_request(tmp_path):
    log = write_log(tmp_path / "a.jsonl", [0.99, 0.99], test_accuracy_raw=[0.98, 0.96])
    out = run(log, "--metric", "test_accuracy_raw", "--windows", "2-2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2] == "| a | 2 | 4.00 | 2.00 (epoch 1) | 4.00 |"


def test_bad_windows_and_foreign_logs_are_one_line_errors(tmp_path):
    log = write_log(tmp_path / "a.jsonl", [0.99])
    for spec, why in [("67", "'67' is not FIRST-LAST (e.g. 67-100)"), ("40-21", "'40-21' needs 1 <= FIRST <= LAST")]:
        out = run(log, "--windows", spec)
        assert out.returncode != 0
        assert out.stderr.strip().splitlines() == [f"error: --windows {spec!r}: {why}"]
    foreign = tmp_path / "other.jsonl"
    foreign.write_text('{"step": 1}\n')
    out = run(foreign)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"error: {foreign} line 1 is not an epoch record with 'epoch' and 'test_accuracy'"]
