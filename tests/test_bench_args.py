"""The bench scripts refuse a bad command line at once, with one line saying what is wrong, and exit 1:
not a traceback minutes into a benchmark (bench/script.py)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script, args, message", [
    ("gpu_recipe.py", ["--seeds", "0,x"], "error: --seeds takes distinct comma-separated integers >= 0 (e.g. 0,1,2), got '0,x'"),
    ("gpu_recipe.py", ["--inits", "7,7"], "error: --inits takes distinct comma-separated integers >= 0 (e.g. 1000,2000), got '7,7'"),
    ("throughput.py", ["--stacked", "abc"], "error: --stacked takes distinct comma-separated integers >= 1 (e.g. 1,3,5), got 'abc'"),
    ("throughput.py", ["--sizes", "0"], "error: --sizes takes distinct comma-separated integers >= 1 (e.g. 10000,30000), got '0'"),
    ("throughput.py", ["--models", "mlp,vit"], "error: --models takes comma-separated names from mlp, conv, got 'mlp,vit'"),
    ("throughput.py", ["--set", "train.foo=1"], "error: unknown config key 'train.foo'; allowed keys in train: "),
    ("kernels.py", ["--set", "model.arch=rnn"], "error: model.arch must be one of "),
])
def test_a_bad_command_line_is_one_line_and_exit_1(tmp_path, script, args, message):
    done = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(message), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_is_one_line():
    done = subprocess.run([sys.executable, str(BENCH / "throughput.py"), "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: train.device=cuda but no CUDA GPU is available; use train.device=cpu or auto"
