"""One run on several processes: `torchrun --nproc-per-node 2 -m ssgan train` with gloo on CPUs.

The maths is that of one process with the same global batch; rank 0 alone records the run; a stopped job
resumes under torchrun and ends as the uninterrupted one; a rank that dies ends the job with one line.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner

from ssgan.cli import cli
from ssgan.config import load_config
from ssgan.errors import ConfigError
from ssgan.training.distributed import Shard, World
from ssgan.training.graphs import use_cuda_graph

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# 30 epochs of 10 steps, the state saved after every epoch: long enough to stop in the middle
LONG = ["--set", "train.epochs=30", "--set", "train.steps_per_epoch=10", "--set", "train.state_every_s=0",
        "--set", "tracking.sample_every=0"]


def torchrun(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*TORCHRUN, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, **kw)


def train(out: Path, uri: str, *extra: str) -> list[str]:
    return ["-m", "ssgan", "train", "-c", SMOKE, "--out", str(out), "--set", f"tracking.uri={uri}", *extra]


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The long smoke run on 2 processes, start to end: its store, summary and the output it printed."""
    folder = tmp_path_factory.mktemp("ddp")
    uri = f"sqlite:///{folder}/mlflow.db"
    code, out, err = finish(torchrun(*train(folder / "out", uri, *LONG)))
    assert code == 0, err[-2000:]
    return uri, json.loads((folder / "out" / "summary.json").read_text()), out


def test_two_processes_train_one_run_that_rank_0_records(uninterrupted):
    uri, summary, out = uninterrupted
    assert len(out.strip().splitlines()) == 1  # one JSON line: rank 0 speaks for the run
    assert json.loads(out)["run_id"] == summary["run_id"]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([summary["experiment_id"]])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["train.batch_size"] == "20"
    assert summary["world_size"] == 2 and summary["epochs_completed"] == 30
    assert [m.step for m in client.get_metric_history(run.info.run_id, "lr")] == list(range(1, 31))


@pytest.mark.parametrize("extra", [
    [],  # the MLP: weight-normed D, G with batch norm (synchronised over the ranks)
    ["tricks.d_norm=batch", "tricks.conditional=true", "tricks.label_smoothing=true", "tricks.label_flip=true"],
], ids=["mlp", "batch-norm-d-conditional-smoothing-flips"])
def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(tmp_path, extra):
    """With Gaussian noise off (each rank draws its own), 10 steps on 2 processes give the weights of 10 steps
    on one, to float tolerance; the two ranks end with identical weights."""
    settings = [SMOKE, "tricks.gaussian_noise=false", *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    alone = subprocess.run([sys.executable, "tests/ddp_fit.py", str(one), *settings], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    code, _, err = finish(torchrun("tests/ddp_fit.py", str(two), *settings))
    assert code == 0, err[-2000:]
    single, rank0, rank1 = (torch.load(f, weights_only=True) for f in (one / "rank0.pt", two / "rank0.pt", two / "rank1.pt"))
    for net in ("classifier", "generator"):
        for name, w in single[net].items():
            torch.testing.assert_close(rank0[net][name], w, rtol=1e-4, atol=1e-5, msg=f"{net}.{name}")
            assert torch.equal(rank0[net][name], rank1[net][name]), f"{net}.{name} differs between the ranks"
    assert rank0["history"][-1]["test_accuracy"] == single["history"][-1]["test_accuracy"]


def test_sigterm_to_the_job_then_resume_under_torchrun_ends_as_the_uninterrupted_run(uninterrupted, tmp_path):
    uri, whole, _ = uninterrupted
    out = tmp_path / "out"
    job = torchrun(*train(out, uri, *LONG))
    wait_for_state(out / "train_state.pt", job)
    job.send_signal(signal.SIGTERM)  # to torchrun: its agent passes it on to the ranks
    code, _, err = finish(job)
    assert code != 0
    assert "interrupted: keeping the" in err and err.count("interrupted: keeping the") == 1  # rank 0's line only
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["stop_reason"] == "interrupted" and 0 < stopped["epochs_completed"] < 30

    code, _, err = finish(torchrun(*train(out, uri, *LONG, "--resume")))
    assert code == 0, err[-2000:]
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["run_id"] == stopped["run_id"] and resumed["stop_reason"] == "completed"
    assert resumed["test_accuracy"] == whole["test_accuracy"]  # the same weights as without the stop
    assert not (out / "train_state.pt").exists()
    run = mlflow.MlflowClient(uri).get_run(resumed["run_id"])
    assert run.info.status == "FINISHED"


def test_a_rank_that_dies_ends_the_job_with_one_line_and_the_state_to_resume_from(tmp_path):
    out = tmp_path / "out"
    job = torchrun(*train(out, f"sqlite:///{tmp_path}/mlflow.db", *LONG))
    wait_for_state(out / "train_state.pt", job)
    ranks = subprocess.run(["pgrep", "-f", f"ssgan train.*{out}"], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-9", max(ranks, key=int)])  # the last started: rank 1
    code, _, err = finish(job)
    assert code != 0
    line = [x for x in err.splitlines() if x.startswith("error: rank 0:")]
    assert len(line) == 1 and "another process of this torchrun job stopped" in line[0]
    assert "run the same torchrun command with --resume" in line[0]
    assert (out / "train_state.pt").exists()


def wait_for_state(path: Path, job: subprocess.Popen, timeout: float = 300) -> None:
    """Until the job has saved a training state (after its first epochs)."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert time.monotonic() < end, "no training state saved"
        time.sleep(0.2)
    time.sleep(1.0)  # a few more epochs


# -- what needs no second process -------------------------------------------------------------------------------
def test_a_batch_wide_draw_is_cut_to_the_rank_s_rows():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    make = lambda n, g: torch.rand(n, 3, generator=g)  # noqa: E731
    whole = Shard(World(), gen()).draw(8, make)
    assert torch.equal(Shard(World(rank=0, size=2), gen()).draw(4, make), whole[:4])
    assert torch.equal(Shard(World(rank=1, size=2), gen()).draw(4, make), whole[4:])
    assert torch.equal(World(rank=1, size=4).shard(torch.arange(8)), torch.tensor([2, 3]))


def test_a_global_batch_that_does_not_split_over_the_processes_is_a_one_line_error(monkeypatch, store_uri):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(cli, ["train", "-c", SMOKE, "--set", f"tracking.uri={store_uri}"])
    assert result.exit_code == 2
    assert "train.batch_size=20 is the global batch and must split evenly over the 3 processes" in result.output


@pytest.mark.parametrize("args", [["train", "-c", SMOKE, "--seeds", "0,1"], ["train", "-c", SMOKE, "--members", "2"],
                                  ["compare", "-c", SMOKE, "--labels", "20"], ["ablate", "-c", SMOKE, "--tricks", "dropout"]])
def test_commands_of_many_runs_are_refused_under_torchrun(monkeypatch, args):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "torchrun" in result.output and "Traceback" not in result.output


def test_cuda_graphs_are_not_captured_under_torchrun():
    cfg = load_config(SMOKE, ["train.cuda_graph=true"])
    with pytest.raises(ConfigError, match="torchrun runs 2 processes"):
        use_cuda_graph(cfg, torch.device("cuda"), World(rank=0, size=2))
