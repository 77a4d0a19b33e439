"""bench/curves.py: runs' test error per epoch on one figure, read from their per-epoch logs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench/curves.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_draws_each_run_and_reports_its_last_and_lowest_error(tmp_path):
    log = tmp_path / "seed0.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "test_accuracy": a}) + "\n"
                           for e, a in [(1, 0.90), (2, 0.985), (3, 0.98)]))
    out = run(f"{log}=CPU", "--out", tmp_path / "curve.png", "--goal", 0.8)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["CPU: 2.00 % test error after epoch 3 (lowest 1.50 %)"]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_or_foreign_file_is_a_one_line_error(tmp_path):
    missing = run(tmp_path / "nope.jsonl", "--out", tmp_path / "c.png")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.jsonl'} does not exist; give the .jsonl file a run wrote (bench/gpu_recipe.py --out)"]
    foreign = tmp_path / "other.jsonl"
    foreign.write_text('{"step": 1, "loss": 0.5}\n')
    bad = run(foreign, "--out", tmp_path / "c.png")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"error: {foreign} line 1 is not an epoch record with 'epoch' and 'test_accuracy'"]
    assert not (tmp_path / "c.png").exists()


def test_other_accuracies_of_the_same_log_are_drawn_on_request(tmp_path):
    log = tmp_path / "seed0.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "test_accuracy": a, "test_accuracy_ema0.9999": b}) + "\n"
                           for e, a, b in [(1, 0.90, 0.91), (2, 0.985, 0.99)]))
    out = run(f"{log}=CPU", "--out", tmp_path / "curve.png", "--metrics", "test_accuracy,test_accuracy_ema0.9999")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["CPU, EMA: 1.50 % test error after epoch 2 (lowest 1.50 %)",
                                       "CPU, ema0.9999: 1.00 % test error after epoch 2 (lowest 1.00 %)"]
    cut = run(f"{log}=CPU", "--out", tmp_path / "cut.png", "--max-epoch", 1)
    assert cut.stdout.splitlines() == ["CPU: 10.00 % test error after epoch 1 (lowest 10.00 %)"]
    missing = run(log, "--out", tmp_path / "c.png", "--metrics", "test_accuracy_raw")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        f"error: {log} line 1 is not an epoch record with 'epoch' and 'test_accuracy_raw'"]
