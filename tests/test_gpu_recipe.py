"""bench/gpu_recipe.py --state: a run stopped by SIGTERM (what ends a lent GPU's call) and started again with
the same command ends as the run that was never stopped, with every epoch in its log once."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ssgan.training.resume import load_state

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 30


def _command(out, *extra):
    return [sys.executable, str(ROOT / "bench/gpu_recipe.py"), "--seed", "0", "--config", str(ROOT / "configs/smoke.yaml"),
            "--out", str(out), "--set", f"train.epochs={EPOCHS}", "--set", "train.steps_per_epoch=10",
            "--set", "train.state_every_s=0", *extra]


def _log(out):
    return [json.loads(line) for line in (out / "smoke-seed0.jsonl").read_text().splitlines()]


def _without_times(records):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "epoch_seconds")} for r in records]


def test_a_recipe_run_stopped_by_sigterm_goes_on_with_the_same_command_and_ends_as_if_never_stopped(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_command(whole), cwd=ROOT, check=True, capture_output=True, timeout=300)

    parts, state = tmp_path / "parts", tmp_path / "state.pt"
    proc = subprocess.Popen(_command(parts, "--state", str(state)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    stopped = json.loads((parts / "smoke-seed0.json").read_text())
    assert stopped["stop_reason"] == "interrupted" and 1 <= stopped["epochs_done"] < EPOCHS
    assert f"the same command continues after epoch {load_state(state)['epoch']} from {state}" in stdout

    again = subprocess.run(_command(parts, "--state", str(state)), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing after epoch" in again.stdout and not state.exists()  # a completed run removes its state
    done = json.loads((parts / "smoke-seed0.json").read_text())
    assert done["stop_reason"] == "completed" and done["epochs_done"] == EPOCHS
    assert [r["epoch"] for r in _log(parts)] == list(range(1, EPOCHS + 1))  # every epoch once, across both parts
    assert _without_times(_log(parts)) == _without_times(_log(whole))
    assert done["test_accuracy"] == json.loads((whole / "smoke-seed0.json").read_text())["test_accuracy"]
    assert np.array_equal(np.load(parts / "smoke-seed0-probs.npy"), np.load(whole / "smoke-seed0-probs.npy"))


def test_a_second_process_on_the_same_state_file_is_a_one_line_error(tmp_path):
    state = tmp_path / "state.pt"
    first = subprocess.Popen(_command(tmp_path / "a", "--state", str(state), "--set", "train.epochs=2000"), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        second = subprocess.run(_command(tmp_path / "b", "--state", str(state)), cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode != 0
        [line] = second.stderr.strip().splitlines()
        assert line.startswith("error: ") and str(state) in line and line.endswith("or use another --state")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
