"""Using a trained model: register it under an alias, predict from CSV / npz / image folders with
`ssgan predict`, and serve it over HTTP with `mlflow models serve`."""
import json
import os
import subprocess
import sys
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ssgan.cli import cli
from ssgan.serving.predictor import Predictor
from test_server import free_port, stop, wait_until_answers
from test_user_data import image_root

TINY = ["--set", "model.d_hidden=[16]", "--set", "model.g_hidden=[16]", "--set", "model.noise_dim=4",
        "--set", "train.epochs=2", "--set", "train.batch_size=10", "--set", "tracking.sample_every=0"]
SERVE_TIMEOUT = 120  # seconds for `mlflow models serve` to answer /ping on 2 busy cores


def table(n, seed):
    rng = np.random.default_rng(seed)
    k = np.arange(n) % 3
    return pd.DataFrame({"a": 3.0 * k + rng.normal(0, 0.5, n), "b": rng.normal(0, 1, n),
                         "kind": np.array(["x", "y", "z"])[k]})


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """ssgan trained on a CSV (half its labels hidden), logged and registered as tiny@champion."""
    tmp = tmp_path_factory.mktemp("serving")
    train = table(90, 0)
    train.loc[train.index % 2 == 0, "kind"] = None
    train.to_csv(tmp / "train.csv", index=False)
    new = table(12, 1).drop(columns="kind")
    new.to_csv(tmp / "new.csv", index=False)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = CliRunner().invoke(cli, ["-q", "train", "--set", "data.name=csv", "--set", f"data.path={tmp / 'train.csv'}",
                                      "--set", "data.label_column=kind", "--set", "data.labels=null",
                                      "--set", f"tracking.uri={uri}", *TINY, "--register", "tiny", "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["registered_model"] == "models:/tiny@champion"
    mlflow.set_tracking_uri(uri)
    state = torch.load(mlflow.artifacts.download_artifacts(run_id=summary["run_id"], artifact_path="checkpoint.pt"),
                       weights_only=True)
    return {"tmp": tmp, "uri": uri, "summary": summary, "new": new, "in_process": Predictor.from_checkpoint(state)}


def predict_cli(model, input_path, out, uri):
    return CliRunner().invoke(cli, ["-q", "predict", "--model", str(model), "--input", str(input_path),
                                    "--out", str(out), "--tracking-uri", uri])


def test_alias_points_at_the_new_version_and_the_model_loads_as_pyfunc(registered):
    client = mlflow.MlflowClient(registered["uri"])
    version = client.get_model_version_by_alias("tiny", "champion")
    assert version.run_id == registered["summary"]["run_id"]
    frame = mlflow.pyfunc.load_model("models:/tiny@champion").predict(registered["new"])
    assert list(frame.columns) == ["predicted", "p_x", "p_y", "p_z"] and len(frame) == 12


@pytest.mark.parametrize("ref", ["alias", "run_id", "checkpoint"])
def test_predict_from_any_model_reference_equals_in_process_predictions(registered, ref, tmp_path):
    tmp, summary = registered["tmp"], registered["summary"]
    model = {"alias": "models:/tiny@champion", "run_id": summary["run_id"],
             "checkpoint": mlflow.artifacts.download_artifacts(run_id=summary["run_id"], artifact_path="checkpoint.pt",
                                                               dst_path=str(tmp_path))}[ref]
    result = predict_cli(model, tmp / "new.csv", tmp_path / "p.csv", registered["uri"])
    assert result.exit_code == 0, result.output
    got = pd.read_csv(tmp_path / "p.csv")
    expected = registered["in_process"].predict_frame(registered["new"])
    assert list(got["input"]) == list(range(12)) and list(got["predicted"]) == list(expected["predicted"])
    assert np.allclose(got[["p_x", "p_y", "p_z"]], expected[["p_x", "p_y", "p_z"]], atol=1e-6)


def test_feature_columns_are_matched_by_name_not_position(registered, tmp_path):
    swapped = registered["new"][["b", "a"]].assign(extra=0.0)
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    result = predict_cli("models:/tiny@champion", tmp_path / "swapped.csv", tmp_path / "p.csv", registered["uri"])
    assert result.exit_code == 0, result.output
    expected = registered["in_process"].predict_frame(registered["new"])
    assert list(pd.read_csv(tmp_path / "p.csv")["predicted"]) == list(expected["predicted"])


@pytest.mark.parametrize("model,rows,message", [
    ("models:/nope@champion", None, "does not resolve to a model"),
    ("0123456789abcdef0123456789abcdef", None, "does not resolve to a model"),
    ("models:/tiny@champion", "a\n1.0\n", "lacks feature column(s) 'b'"),
    ("models:/tiny@champion", "a,b\n1.0,\n", "input row 0 contains NaN"),
    ("models:/tiny@champion", "a,b\n1.0,heavy\n", "non-numeric values"),
])
def test_bad_prediction_inputs_are_one_line_errors(registered, tmp_path, model, rows, message):
    path = tmp_path / "in.csv"
    path.write_text(rows or "a,b\n1,2\n")
    result = predict_cli(model, path, tmp_path / "p.csv", registered["uri"])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_reserved_alias_and_register_without_a_logged_model_are_refused(tmp_path, npz_path):
    base = ["train", "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
            "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", *TINY, "--register", "tiny"]
    reserved = CliRunner().invoke(cli, [*base, "--alias", "latest"])
    assert reserved.exit_code == 2 and "--alias 'latest' is reserved by MLflow" in reserved.output
    unlogged = CliRunner().invoke(cli, [*base, "--set", "tracking.log_model=false"])
    assert unlogged.exit_code == 2 and "--register needs the model to be logged" in unlogged.output


def test_image_model_predicts_a_folder_and_an_npz(tmp_path):
    root = image_root(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    trained = CliRunner().invoke(cli, ["-q", "train", "--set", "data.name=imagefolder", "--set", f"data.root={root}",
                                       "--set", "data.labels=null", "--set", "data.image_size=[8,8]",
                                       "--set", f"tracking.uri={uri}", *TINY, "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    run_id = json.loads((tmp_path / "run" / "summary.json").read_text())["run_id"]
    result = predict_cli(run_id, root / "unlabeled", tmp_path / "p.csv", uri)  # 12x10 PNGs, resized to 8x8
    assert result.exit_code == 0, result.output
    got = pd.read_csv(tmp_path / "p.csv")
    assert len(got) == 6 and set(got["predicted"]) <= {"bright", "dark"} and got["input"].str.endswith(".png").all()
    x = np.stack([np.full((3, 8, 8), v, dtype=np.float32) for v in (20.0, 230.0)])
    np.savez(tmp_path / "x.npz", X=x)
    assert predict_cli(run_id, tmp_path / "x.npz", tmp_path / "q.csv", uri).exit_code == 0
    assert list(pd.read_csv(tmp_path / "q.csv")["predicted"]) == ["dark", "bright"]
    table_input = predict_cli(run_id, tmp_path / "run" / "summary.json", tmp_path / "r.csv", uri)
    assert table_input.exit_code == 2 and "error:" in table_input.output


def test_mlflow_models_serve_answers_over_http(registered):
    """`mlflow models serve` on a loopback port, in this environment (--env-manager local)."""
    port, log = free_port(), registered["tmp"] / "serve.log"
    # MLflow starts `uvicorn` by name: the environment's bin folder must be on PATH (as in an activated venv)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"],
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny@champion",
                                 "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_answers(proc, f"http://127.0.0.1:{port}/ping", log, SERVE_TIMEOUT)
        new = registered["new"]
        body = json.dumps({"dataframe_split": new.to_dict(orient="split")}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        expected = registered["in_process"].predict_frame(new)
        assert [p["predicted"] for p in predictions] == list(expected["predicted"])
        assert np.allclose([p["p_y"] for p in predictions], expected["p_y"], atol=1e-6)
    finally:
        stop(proc)  # the CLI and the uvicorn server it started


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return ["same"] * len(model_input)


def test_a_run_keeps_its_latest_model_and_any_registered_one(store_uri):
    from ssgan.serving.pyfunc import retire_earlier_models

    mlflow.set_tracking_uri(store_uri)
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=client.create_experiment("retire")) as run:
        first, second, third = (mlflow.pyfunc.log_model(name="model", python_model=_Constant(), pip_requirements=["mlflow"])
                                for _ in range(3))
    mlflow.register_model(first.model_uri, "kept")
    assert retire_earlier_models(run.info.run_id, third.model_id) == [second.model_id]
    left = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert sorted(m.model_id for m in left) == sorted([first.model_id, third.model_id])
    assert client.get_logged_model(first.model_id).tags["superseded_by"] == third.model_id
    assert mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").metadata.model_id == third.model_id
